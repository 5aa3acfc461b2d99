"""Configuration: clear errors, the environment read in one place."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import syncperf
from syncperf import Config, ConfigError


@pytest.mark.parametrize(
    ("option", "value", "accepted"),
    [
        ("max_entities", 0, "an integer >= 1"),
        ("max_entities", "10", "an integer >= 1"),
        ("trace_sample_rate", 1.5, "a number >= 0.0 and <= 1.0"),
        ("overhead_budget", 0, "a number > 0.0"),
        ("strict", "yes", "True or False"),
        ("entities", "todo", "an iterable of entity names or None"),
    ],
)
def test_bad_options_name_the_option_the_value_and_what_is_accepted(
    option: str, value: object, accepted: str
) -> None:
    with pytest.raises(ConfigError) as info:
        Config(**{option: value})
    assert info.value.option == option
    assert str(info.value) == f"{option}={value!r} is not accepted: expected {accepted}"
    assert isinstance(info.value, ValueError)


def test_unknown_option_lists_what_is_accepted() -> None:
    with pytest.raises(ConfigError, match=r"max_entitys=5 .* one of enabled, strict"):
        syncperf.configure(max_entitys=5)


def test_environment_variables_are_read_and_overridden_by_arguments() -> None:
    env = {
        "SYNCPERF_MAX_ENTITIES": "7",
        "SYNCPERF_ENTITIES": "todo, note",
        "SYNCPERF_TRACE_SAMPLE_RATE": "0.25",
        "OTEL_METRIC_EXPORT_INTERVAL": "15000",
        "OTEL_SDK_DISABLED": "true",
    }
    config = Config.from_env(env, max_entities=9)
    assert config.max_entities == 9
    assert config.entities == frozenset({"todo", "note"})
    assert config.trace_sample_rate == 0.25
    assert config.export_interval == 15.0
    assert config.enabled is False


def test_a_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="SYNCPERF_MAX_ENTITIES='many'"):
        Config.from_env({"SYNCPERF_MAX_ENTITIES": "many"})


@given(st.integers(min_value=1, max_value=10**6), st.floats(min_value=0, max_value=1))
def test_valid_numeric_environment_values_round_trip(entities: int, rate: float) -> None:
    config = Config.from_env(
        {"SYNCPERF_MAX_ENTITIES": str(entities), "SYNCPERF_TRACE_SAMPLE_RATE": repr(rate)}
    )
    assert (config.max_entities, config.trace_sample_rate) == (entities, rate)


@given(st.text())
def test_any_boolean_text_either_parses_or_raises_config_error(raw: str) -> None:
    try:
        config = Config.from_env({"SYNCPERF_STRICT": raw})
    except ConfigError as error:
        assert error.option == "SYNCPERF_STRICT"
    else:
        assert config.strict is (raw.strip().lower() in {"1", "true", "yes", "on"})


def test_configure_installs_and_returns_the_active_config() -> None:
    from syncperf import _runtime

    previous = _runtime.replace(None)
    try:
        config = syncperf.configure(max_entities=3)
        assert _runtime.current().config is config
        assert config.max_entities == 3
    finally:
        installed = _runtime.replace(previous)
        assert installed is not None
        installed.shutdown()


def test_configure_rejects_a_config_combined_with_options() -> None:
    with pytest.raises(ConfigError, match="config="):
        syncperf.configure(Config(), strict=True)

"""Configuration: clear errors, the environment read in one place."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import syncperf
import syncperf.testing
from syncperf import Config, ConfigError, _runtime


@pytest.mark.parametrize(
    ("option", "value", "accepted"),
    [
        ("max_entities", 0, "an integer >= 1"),
        ("max_entities", "10", "an integer >= 1"),
        ("trace_sample_rate", 1.5, "a number >= 0.0 and <= 1.0"),
        ("overhead_budget", 0, "a number > 0.0 and <= 86400.0"),
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
    with pytest.raises(ConfigError, match=r"max_entitys=<an int .* one of enabled, strict"):
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
    with pytest.raises(ConfigError, match="SYNCPERF_MAX_ENTITIES=<a str of length 4, not quoted>"):
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


_SECONDS_OPTIONS = (
    "slow_threshold",
    "overhead_budget",
    "shed_cooldown",
    "shutdown_timeout",
    "export_interval",
    "export_timeout",
)
_NUMBER_OPTIONS = (*_SECONDS_OPTIONS, "sync_log_rate_limit", "trace_sample_rate")
_huge = st.one_of(
    st.sampled_from([math.inf, -math.inf, math.nan, 1e300, 86400.0, 86400.5, 10**400, -(10**400)]),
    st.floats(),
    st.integers(min_value=-(10**500), max_value=10**500),
)


@given(st.sampled_from(_NUMBER_OPTIONS), _huge)
def test_a_huge_or_non_finite_number_is_accepted_and_builds_a_runtime_or_is_a_config_error(
    option: str, value: float
) -> None:
    try:
        config = Config(**{option: value})
    except ConfigError as error:
        assert error.option == option
        return
    with syncperf.testing.capture(**{option: getattr(config, option)}):

        @syncperf.instrument_sync("push")
        def push() -> int:
            return 1

        assert push() == 1
        # a flush within the option's time (a tiny shutdown_timeout may run out: False)
        assert _runtime.current().flush() in (True, False)


@pytest.mark.parametrize("option", _SECONDS_OPTIONS)
def test_seconds_options_name_their_finite_maximum(option: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config(**{option: math.inf})
    assert "<= 86400" in info.value.accepted
    assert getattr(Config(**{option: 86400}), option) == 86400


def test_configure_with_an_integer_too_large_for_a_float_raises_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        syncperf.configure(export_interval=10**400)
    assert info.value.option == "export_interval"


@pytest.mark.parametrize(
    "var",
    [
        "SYNCPERF_SLOW_THRESHOLD",
        "SYNCPERF_OVERHEAD_BUDGET",
        "SYNCPERF_SHED_COOLDOWN",
        "SYNCPERF_SHUTDOWN_TIMEOUT",
    ],
)
@pytest.mark.parametrize("raw", ["inf", "1e300", "1e400"])
def test_an_infinite_environment_value_is_logged_and_the_default_used_on_first_use(
    var: str, raw: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(var, raw)
    previous = _runtime.replace(None)
    try:
        rt = _runtime.current()

        @syncperf.instrument_sync("push")
        def push() -> int:
            return 1

        assert push() == 1
        assert rt.flush() is True  # the exit hook's wait: the default, finite
        assert var.removeprefix("SYNCPERF_").lower() in caplog.text.lower()
        assert rt.config == Config()
    finally:
        installed = _runtime.replace(previous)
        assert installed is not None
        installed.shutdown()


@pytest.mark.parametrize(
    ("raw", "enabled"),
    [("true", False), ("TRUE", False), (" True ", False), ("false", True), ("1", True),
     ("yes", True), ("disabled", True), ("", True)],
)  # fmt: skip
def test_otel_sdk_disabled_follows_the_specification_only_true_disables(
    raw: str, enabled: bool
) -> None:
    from syncperf.export import _otlp

    env = {"OTEL_SDK_DISABLED": raw}
    assert Config.from_env(env).enabled is enabled
    assert _otlp.disabled(env) is not enabled  # one reading for both


def test_an_otel_sdk_disabled_value_other_than_true_or_false_is_warned_about_unquoted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert Config.from_env({"OTEL_SDK_DISABLED": "sk_live_token"}).enabled is True
    assert "OTEL_SDK_DISABLED" in caplog.text
    assert "sk_live_token" not in caplog.text


@pytest.mark.parametrize(
    "var",
    [
        "OTEL_METRIC_EXPORT_INTERVAL",
        "OTEL_METRIC_EXPORT_TIMEOUT",
        "OTEL_BSP_MAX_QUEUE_SIZE",
        "OTEL_PYTHON_EXCLUDED_URLS",
        "SYNCPERF_MAX_ENTITIES",
        "SYNCPERF_SLOW_THRESHOLD",
        "SYNCPERF_STRICT",
    ],
)
@pytest.mark.parametrize("raw", ["", "  "], ids=["empty", "blank"])
def test_an_empty_variable_is_the_same_as_unset(var: str, raw: str) -> None:
    assert Config.from_env({var: raw}) == Config()


def test_an_empty_fastapi_excluded_urls_falls_back_to_the_generic_variable() -> None:
    env = {"OTEL_PYTHON_FASTAPI_EXCLUDED_URLS": "", "OTEL_PYTHON_EXCLUDED_URLS": "healthz"}
    assert Config.from_env(env).excluded_urls == "healthz"


@pytest.mark.parametrize(
    ("var", "raw"),
    [
        ("OTEL_METRIC_EXPORT_INTERVAL", "soon"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "-5"),
        ("OTEL_METRIC_EXPORT_TIMEOUT", "inf"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "many"),
        ("OTEL_PYTHON_EXCLUDED_URLS", "(unclosed"),
    ],
)
def test_an_invalid_otel_variable_is_warned_about_and_ignored_as_the_specification_says(
    var: str, raw: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = Config.from_env({var: raw, "SYNCPERF_MAX_ENTITIES": "7"})
    assert config == Config(max_entities=7)
    assert var in caplog.text


def test_without_configure_one_bad_variable_is_ignored_alone(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "")
    monkeypatch.setenv("SYNCPERF_MAX_ENTITIES", "sk_live_secret")
    monkeypatch.setenv("SYNCPERF_SLOW_THRESHOLD", "inf")
    monkeypatch.setenv("SYNCPERF_MAX_SERIES", "50")
    previous = _runtime.replace(None)
    try:
        config = _runtime.current().config
        assert config.enabled is False
        assert config.max_series == 50
        assert (config.max_entities, config.slow_threshold) == (100, 2.0)
        assert "SYNCPERF_MAX_ENTITIES" in caplog.text and "SYNCPERF_SLOW_THRESHOLD" in caplog.text
        assert "sk_live_secret" not in caplog.text
    finally:
        installed = _runtime.replace(previous)
        assert installed is not None
        installed.shutdown()


def test_configure_still_raises_for_a_bad_syncperf_variable() -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_env({"SYNCPERF_SLOW_THRESHOLD": "inf"})
    assert info.value.option == "SYNCPERF_SLOW_THRESHOLD"


UNCOMPILABLE = {  # patterns re.compile rejects with another error than re.error
    "overflow": "healthz,a{4294967296}",
    "recursion": "(" * 2000 + "x" + ")" * 2000,
}


@pytest.mark.parametrize("raw", UNCOMPILABLE.values(), ids=UNCOMPILABLE.keys())
@pytest.mark.parametrize("var", ["OTEL_PYTHON_EXCLUDED_URLS", "OTEL_PYTHON_FASTAPI_EXCLUDED_URLS"])
def test_an_excluded_urls_variable_that_cannot_compile_is_ignored_on_first_use(
    var: str, raw: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(var, raw)
    monkeypatch.setenv("SYNCPERF_MAX_SERIES", "50")
    previous = _runtime.replace(None)
    try:
        with syncperf.sync_operation("pull", entity="todo") as op:  # no raise into the handler
            op.set_batch_size(1)
        config = _runtime.current().config
        assert (config.excluded_urls, config.max_series) == (None, 50)
        assert var in caplog.text and raw not in caplog.text and "a{4294967296}" not in caplog.text
        assert Config.from_env({var: raw}) == Config()  # configure(): ignored as well
    finally:
        installed = _runtime.replace(previous)
        assert installed is not None
        installed.shutdown()


@pytest.mark.parametrize("raw", UNCOMPILABLE.values(), ids=UNCOMPILABLE.keys())
def test_excluded_urls_that_cannot_compile_given_in_code_is_a_config_error(raw: str) -> None:
    from syncperf.asgi import SyncPerfMiddleware

    async def app(scope: Any, receive: Any, send: Any) -> None:
        pass

    for call in (
        lambda: syncperf.configure(excluded_urls=raw),
        lambda: Config(excluded_urls=raw),
        lambda: SyncPerfMiddleware(app, excluded_urls=raw),
    ):
        with pytest.raises(ConfigError) as info:
            call()
        assert info.value.option == "excluded_urls"


BIG_LEVEL = "error=" + "9" * 5000  # past int()'s digit limit: a bare ValueError


def test_a_level_too_long_for_int_is_a_config_error_naming_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_env({"SYNCPERF_SYNC_LOG_LEVELS": BIG_LEVEL})
    assert info.value.option == "SYNCPERF_SYNC_LOG_LEVELS"
    assert "9999" not in str(info.value)


def test_a_level_too_long_for_int_is_ignored_on_first_use(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SYNCPERF_SYNC_LOG_LEVELS", BIG_LEVEL)
    monkeypatch.setenv("SYNCPERF_MAX_SERIES", "50")
    previous = _runtime.replace(None)
    try:
        with syncperf.sync_operation("pull", entity="todo") as op:
            op.set_batch_size(1)
        config = _runtime.current().config
        assert config.sync_log_levels == Config().sync_log_levels and config.max_series == 50
        assert "SYNCPERF_SYNC_LOG_LEVELS" in caplog.text and "9999" not in caplog.text
    finally:
        installed = _runtime.replace(previous)
        assert installed is not None
        installed.shutdown()


def test_an_unexpected_error_reading_a_variable_leniently_is_logged_unquoted(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from syncperf import _config_env

    def broken(var: str, raw: str) -> object:
        raise RuntimeError(raw)

    monkeypatch.setitem(_config_env.SYNCPERF_VARS, "max_entities", broken)
    env = {"SYNCPERF_MAX_ENTITIES": "sk_live_secret", "SYNCPERF_MAX_SERIES": "50"}
    assert Config.from_env(env, lenient=True) == Config(max_series=50)
    assert "SYNCPERF_MAX_ENTITIES" in caplog.text and "sk_live_secret" not in caplog.text


SECRET = "Bearer sk_live_s3cr3t"


@pytest.mark.parametrize(
    "var",
    ["SYNCPERF_SLOW_THRESHOLD", "SYNCPERF_MAX_ENTITIES", "SYNCPERF_STRICT", "SYNCPERF_ENTITIES",
     "SYNCPERF_SYNC_LOG_LEVELS", "SYNCPERF_SYNC_LOG_STARTS", "SYNCPERF_TRACE_SAMPLE_RATE"],
)  # fmt: skip
def test_a_rejected_syncperf_variable_is_never_quoted(
    var: str, caplog: pytest.LogCaptureFixture
) -> None:
    raws = {"SYNCPERF_SYNC_LOG_LEVELS": "error=" + SECRET, "SYNCPERF_ENTITIES": SECRET + ","}
    raw = raws.get(var, SECRET)
    with pytest.raises(ConfigError) as info:
        Config.from_env({var: raw})
    assert info.value.option == var and var in str(info.value)
    assert "s3cr3t" not in str(info.value) and "s3cr3t" not in repr(info.value)
    assert "not quoted" in str(info.value)
    assert Config.from_env({var: raw}, lenient=True) == Config()
    assert "s3cr3t" not in caplog.text


@pytest.mark.parametrize(
    "options",
    [{"header": {"authorization": SECRET}}, {"endpint": f"https://user:{SECRET}@collector"}],
)
def test_an_unknown_option_is_named_but_its_value_never_quoted(
    options: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    from syncperf.export import setup_otlp

    for call in (lambda: syncperf.configure(**options), lambda: setup_otlp(**options)):
        with pytest.raises(ConfigError) as info:
            call()
        assert info.value.option in options and info.value.option in str(info.value)
        assert "one of enabled, strict" in str(info.value)
        assert "s3cr3t" not in str(info.value) and "s3cr3t" not in caplog.text

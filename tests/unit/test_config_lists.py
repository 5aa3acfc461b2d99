"""The comma-separated ``SYNCPERF_*`` variables and the name-list options: an empty item is a
``ConfigError`` (never a silently shorter or empty list), each item is checked by the rule
of what it names (entities: names; ``sync_log_starts``: operation names, as
``instrument_sync`` checks them), and the error says what is accepted for that option."""

from __future__ import annotations

import logging
import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from syncperf import Config, ConfigError, _gate

OPERATION = re.compile(r"[a-z][a-z0-9_]{0,31}")
LIST_VARIABLES = {"SYNCPERF_ENTITIES": "entities", "SYNCPERF_SYNC_LOG_STARTS": "sync_log_starts"}
EMPTY_ITEMS = [",", " , ", "todo,,note", "todo,", ",todo", "todo, ,note"]


@pytest.mark.parametrize("var", sorted(LIST_VARIABLES))
@pytest.mark.parametrize("raw", EMPTY_ITEMS)
def test_an_empty_item_in_a_list_variable_is_a_config_error(var: str, raw: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_env({var: raw})
    assert info.value.option == var
    assert repr(info.value.value) == f"<a str of length {len(raw.strip())}, not quoted>"
    assert info.value.accepted.startswith("comma-separated ")
    assert "none empty" in info.value.accepted


@pytest.mark.parametrize("var", [*sorted(LIST_VARIABLES), "SYNCPERF_SYNC_LOG_LEVELS"])
@pytest.mark.parametrize("raw", ["", "  "], ids=["empty", "blank"])
def test_an_empty_list_variable_is_the_same_as_unset(var: str, raw: str) -> None:
    assert Config.from_env({var: raw}) == Config()


@pytest.mark.parametrize("raw", [",", "success=INFO,,error=ERROR", "error=ERROR,"])
def test_an_empty_item_in_the_levels_variable_is_a_config_error(raw: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_env({"SYNCPERF_SYNC_LOG_LEVELS": raw})
    assert info.value.option == "SYNCPERF_SYNC_LOG_LEVELS"


@pytest.mark.parametrize("var", sorted(LIST_VARIABLES))
def test_a_rejected_list_variable_is_described_not_quoted(var: str) -> None:
    raw = "todo," * 100 + ","
    with pytest.raises(ConfigError) as info:
        Config.from_env({var: raw})
    shown = str(info.value)
    assert shown.startswith(f"{var}=<a str of length 501, not quoted> is not accepted")
    assert "todo" not in shown


@pytest.mark.parametrize("var", sorted(LIST_VARIABLES))
def test_leniently_a_rejected_list_variable_is_ignored_unquoted(
    var: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    config = Config.from_env({var: "secret_token,,x", "SYNCPERF_MAX_ENTITIES": "7"}, lenient=True)
    assert config == Config(max_entities=7)
    assert var in caplog.text and "secret_token" not in caplog.text


def _expected(raw: str, valid: re.Pattern[str] | None) -> frozenset[str] | None:
    """The oracle: what a list variable holding ``raw`` configures, None when it is rejected
    (an empty variable is unset: the option's default)."""
    items = [item.strip() for item in raw.strip().split(",")]
    if not all(items):
        return None
    if valid is None:  # entities: names
        ok = all(_gate.name(item) == item for item in items)
    else:
        ok = all(valid.fullmatch(item) for item in items)
    return frozenset(items) if ok else None


@given(st.text(max_size=60))
@example(",")
@example("todo,,note")
@example("todo, note")
def test_any_entities_variable_configures_its_items_or_names_the_variable(raw: str) -> None:
    try:
        config = Config.from_env({"SYNCPERF_ENTITIES": raw})
    except ConfigError as error:
        assert error.option == "SYNCPERF_ENTITIES"
        assert raw.strip() and _expected(raw, None) is None
        assert "entity names" in error.accepted
    else:
        assert config.entities == (_expected(raw, None) if raw.strip() else None)


@given(st.text(max_size=60) | st.lists(st.from_regex(OPERATION, fullmatch=True)).map(",".join))
@example("pull, initial_pull")
@example("Pull")
@example("!!")
def test_any_log_starts_variable_configures_operations_or_names_the_variable(raw: str) -> None:
    try:
        config = Config.from_env({"SYNCPERF_SYNC_LOG_STARTS": raw})
    except ConfigError as error:
        assert error.option == "SYNCPERF_SYNC_LOG_STARTS"
        assert raw.strip() and _expected(raw, OPERATION) is None
        assert "operation names" in error.accepted and "[a-z][a-z0-9_]{0,31}" in error.accepted
    else:
        expected = _expected(raw, OPERATION) if raw.strip() else frozenset()
        assert config.sync_log_starts == expected


@pytest.mark.parametrize("value", [None, "pull", ["!!"], ["Pull"], ["pull", ""], [1], ["a" * 33]])
def test_a_bad_sync_log_starts_names_operation_names_and_their_rule(value: object) -> None:
    with pytest.raises(ConfigError) as info:
        Config(sync_log_starts=value)  # type: ignore[arg-type]
    assert info.value.option == "sync_log_starts"
    accepted = info.value.accepted
    assert "operation names" in accepted and "[a-z][a-z0-9_]{0,31}" in accepted
    assert "entity" not in accepted and "None" not in accepted


@given(st.lists(st.text(max_size=40) | st.from_regex(OPERATION, fullmatch=True), max_size=4))
def test_sync_log_starts_accepts_exactly_what_an_operation_may_be_named(names: list[str]) -> None:
    valid = all(OPERATION.fullmatch(name) for name in names)
    try:
        config = Config(sync_log_starts=frozenset(names))
    except ConfigError as error:
        assert not valid and error.option == "sync_log_starts"
    else:
        assert valid and config.sync_log_starts == frozenset(names)


def test_sync_log_starts_declares_no_operation() -> None:
    Config(sync_log_starts=frozenset({"never_declared_op"}))
    assert not _gate.is_operation("never_declared_op")


@pytest.mark.parametrize("value", ["todo", None, 5])
def test_a_bad_entities_still_says_entity_names_or_none(value: object) -> None:
    if value is None:  # None is accepted: no allow-list
        assert Config(entities=None).entities is None
        return
    with pytest.raises(ConfigError) as info:
        Config(entities=value)  # type: ignore[arg-type]
    assert info.value.accepted == "an iterable of entity names or None"

"""A checkpoint in a query string counts as the same number sent as JSON would."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import syncperf
from syncperf._staleness import from_millis
from syncperf.adapters import watermelondb
from syncperf.testing import capture

SECRET = "7f3a9c"
_FAR = 2**62


def outcome(value: Any) -> tuple[bool, dict[str, float]]:
    """Whether a staleness was recorded, and the drops, for ``value`` as a WatermelonDB
    ``last_pulled_at``."""
    with capture(strict=False) as cap:
        with syncperf.sync_operation("pull") as op:
            watermelondb.Pull().on_query(op, {"last_pulled_at": value})
        recorded = sum(p.count for p in cap.points("sync.pull.staleness")) > 0
        drops = {
            str(p.attributes["syncperf.reason"]): p.value for p in cap.points("syncperf.dropped")
        }
    return recorded, drops


def _plain(value: float) -> bool:
    return "e" not in repr(value) and math.isfinite(value)


_INTS = st.integers() | st.integers(-(10**25), 10**25)
_FLOATS = st.floats(-1e16, 1e16).filter(_plain) | st.floats(1e12, 2e12)


@given(_INTS)
def test_an_int_as_text_is_read_as_the_int(value: int) -> None:
    text, number = from_millis(str(value)), from_millis(value)
    if abs(value) <= _FAR:
        assert text == number
    else:  # beyond any clock: both past _FAR, with the same sign (far ahead, never synced)
        assert type(text) is type(number) is int
        assert text * value > _FAR and number * value > _FAR


@given(_FLOATS)
def test_a_float_in_plain_decimals_as_text_is_read_as_the_float(value: float) -> None:
    assert from_millis(repr(value)) == from_millis(value)
    assert from_millis(str(value)) == from_millis(value)


@settings(max_examples=40, deadline=None)
@given(_INTS | _FLOATS)
def test_a_query_string_checkpoint_has_the_outcome_of_the_same_number(value: float) -> None:
    assert outcome(str(value)) == outcome(value)


def test_a_nanosecond_epoch_is_in_the_future_on_both_paths() -> None:
    ns = time.time_ns() - 3600 * 10**9
    assert outcome(str(ns)) == outcome(ns) == (False, {"checkpoint_in_future": 1})


def test_fractional_milliseconds_are_recorded_on_both_paths() -> None:
    ms = round(time.time() * 1000 - 60_000.5, 2)
    assert outcome(f"{ms:.2f}") == outcome(ms) == (True, {})


def test_digits_with_no_end_are_in_the_future() -> None:
    assert outcome("9" * 1_000_000) == (False, {"checkpoint_in_future": 1})
    assert outcome(10**400) == outcome(str(10**400)) == (False, {"checkpoint_in_future": 1})
    assert outcome(-(10**400)) == (False, {})
    assert outcome("-" + "9" * 1_000_000) == (False, {})
    assert outcome("0" * 100_000 + "1" + "0" * 12) == (False, {"checkpoint_too_old": 1})


@pytest.mark.parametrize(
    "junk",
    ["1e400", "1e12", "nan", "inf", "-inf", "+1", " 1", "1 ", "1_000", "0x10", "1.", ".5", "1.5.5",
     "-", "--1", "١٢٣", "1\u0663", "1.\u0663", "12\ud800", "\ud800", "1" * 500 + "x"],
)  # fmt: skip
def test_what_is_not_plain_decimals_is_an_unparseable_query(junk: str) -> None:
    assert from_millis(junk) is None
    assert outcome(junk) == (False, {"unparseable_payload": 1})


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@settings(max_examples=60, deadline=None)
@given(
    st.text(max_size=60)
    | st.from_regex(r"-?[0-9\u0660-\u0669]{1,30}(\.[0-9]{0,30})?", fullmatch=True)
)
def test_hostile_text_never_raises_nor_reaches_a_log_line(text: str) -> None:
    lines = _Lines()
    logger = logging.getLogger("syncperf")
    logger.addHandler(lines)
    try:
        for value in (text, SECRET + text, text + SECRET):
            from_millis(value)
            outcome(value)
    finally:
        logger.removeHandler(lines)
    for line in lines.lines:
        assert SECRET not in line
        assert len(text) < 8 or text not in line

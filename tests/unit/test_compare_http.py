"""``syncperf compare`` talking to Prometheus: hostile ``--selector`` and window values."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncperf._tools._window import CompareError, check_selector, parse_window
from tests.unit.test_compare import WINDOWS, _run

CLOSED = ["--prometheus", "http://127.0.0.1:1", "--timeout", "2"]
"""Nothing listens on port 1."""


def _one_short_line(err: str) -> None:
    assert len(err.strip().splitlines()) == 1, err
    assert len(err) < 300, err[:300]
    assert err.startswith("syncperf compare: ")


# --- --selector --------------------------------------------------------------------------


@pytest.mark.parametrize("selector", ["x" * 1_000_000, "}" + "\n" * 10_000, "{" * 100_000])
def test_a_bad_selector_is_one_short_line_whatever_its_length(
    selector: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = _run(capsys, [*WINDOWS, *CLOSED, "--selector", selector])
    assert (status, out) == (2, "")
    _one_short_line(err)
    assert "--selector" in err


def test_a_selector_of_undecodable_bytes_is_a_usage_error_not_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # what Python makes of a command-line argument that is not UTF-8
    status, out, err = _run(capsys, [*WINDOWS, *CLOSED, "--selector", 'job="\udcff"'])
    assert (status, out) == (2, "")
    _one_short_line(err)
    assert "--selector" in err
    err.encode("utf-8")


def _short_and_printable(error: CompareError) -> None:
    message = str(error)
    assert len(message) <= 150 and message.isprintable(), message
    message.encode("utf-8")


@given(st.text(max_size=400))
def test_any_selector_can_be_sent_or_is_a_short_printable_error(selector: str) -> None:
    try:
        inner = check_selector(selector)
    except CompareError as error:
        _short_and_printable(error)
    else:
        inner.encode("utf-8")  # the query body is UTF-8


@given(st.text(max_size=400))
def test_any_window_is_a_window_or_a_short_printable_error(raw: str) -> None:
    try:
        parse_window(raw, "--before", now=1e9)
    except CompareError as error:
        _short_and_printable(error)

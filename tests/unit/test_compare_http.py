"""``syncperf compare`` talking to Prometheus: the ``--prometheus`` URL (query string,
fragment), and hostile ``--selector`` and window values, against loopback servers."""

from __future__ import annotations

import urllib.parse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncperf._tools._window import CompareError, Prometheus, check_selector, parse_window
from tests.unit.test_compare import (
    EMPTY,
    WINDOWS,
    Answer,
    Received,
    _fake_prometheus,
    _json,
    _run,
    _send,
)

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


# --- the URL's query string and fragment ---------------------------------------------------


def test_the_urls_query_string_goes_with_every_query_and_is_never_shown(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with _fake_prometheus(_json(EMPTY)) as (url, seen):
        prometheus = url + "/prom/?token=s3cret&org=1"
        status, out, err = _run(capsys, [*WINDOWS, "--prometheus", prometheus])
    assert (status, err) == (0, "")
    assert seen and {h.path for h in seen} == {"/prom/api/v1/query?token=s3cret&org=1"}
    assert all(b"query=" in h.body for h in seen)  # the query itself stays in the body
    assert "s3cret" not in out


def _server_error(handler: Received) -> None:
    _send(handler, 500, b"<html>internal error</html>")


def _not_json(handler: Received) -> None:
    _send(handler, 200, b"Prometheus? no")


@pytest.mark.parametrize("answer", [_server_error, _not_json, _json({"status": "error"})])
def test_a_token_in_the_query_string_is_never_in_an_error(
    answer: Answer, capsys: pytest.CaptureFixture[str]
) -> None:
    with _fake_prometheus(answer) as (url, seen):
        status, out, err = _run(capsys, [*WINDOWS, "--prometheus", url + "?token=s3cret"])
    assert seen and (status, out) == (2, "")
    _one_short_line(err)
    assert url in err and "s3cret" not in err


PRINTABLE = st.characters(exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"))


@settings(max_examples=30, deadline=None)
@given(st.text(PRINTABLE, max_size=40))
def test_any_query_string_is_sent_percent_encoded_and_never_shown(token: str) -> None:
    token = token.replace("#", "")
    with _fake_prometheus(_server_error) as (url, seen), pytest.raises(CompareError) as raised:
        Prometheus(f"{url}/p?k=s3cret{token}", timeout=5).query("up", 0.0)
    assert "s3cret" not in str(raised.value)
    (request,) = seen
    path, _, query = request.path.partition("?")
    assert path == "/p/api/v1/query"
    assert query.isascii() and urllib.parse.unquote(query) == f"k=s3cret{token}"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:1/p?token=s3cret#part",
        "http://127.0.0.1:1/#/graph",
        "http://127.0.0.1:1/#",
        "http://admin:s3#cret@127.0.0.1:1",  # a '#' in a password must be written %23
    ],
)
def test_a_url_with_a_fragment_is_a_usage_error(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = _run(capsys, [*WINDOWS, "--prometheus", url])
    assert (status, out) == (2, "")
    _one_short_line(err)
    assert "--prometheus" in err and "%23" in err
    assert "s3" not in err and "part" not in err

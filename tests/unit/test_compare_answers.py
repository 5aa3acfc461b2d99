"""``syncperf compare`` reading hostile Prometheus answers: whatever the body, compare gives
rows or a one-line error (exit status 2), never a traceback or exit status 1 ("regression")."""

from __future__ import annotations

import io
import json
import time
import urllib.error
from email.message import Message
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncperf._tools._window import CompareError, Prometheus, Window
from syncperf._tools.compare import Thresholds, compare
from tests.unit.test_compare import WINDOWS, _fake_prometheus, _json, _run, _send

NOW = 1_800_000_000.0
DEEP = b"[" * 200_000
OP = {"sync_operation": "push", "sync_entity": "todo", "sync_outcome": "success"}


def _one_line(status: int, out: str, err: str) -> None:
    assert (status, out) == (2, ""), err[-500:]
    assert len(err.strip().splitlines()) == 1, err[-500:]
    assert len(err) < 400 and err.startswith("syncperf compare: "), err[:400]


def test_a_deeply_nested_answer_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with _fake_prometheus(lambda handler: _send(handler, 200, DEEP)) as (url, _):
        _one_line(*_run(capsys, [*WINDOWS, "--prometheus", url]))


def test_a_deeply_nested_error_answer_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with _fake_prometheus(lambda handler: _send(handler, 400, DEEP)) as (url, _):
        status, out, err = _run(capsys, [*WINDOWS, "--prometheus", url])
    _one_line(status, out, err)
    assert "HTTP 400" in err


def test_an_integer_too_big_for_a_float_is_dropped_like_any_impossible_count(
    capsys: pytest.CaptureFixture[str],
) -> None:
    answer = {"status": "success", "data": {"result": [{"metric": OP, "value": [1, 10**400]}]}}
    with _fake_prometheus(_json(answer)) as (url, _):
        status, out, err = _run(capsys, [*WINDOWS, "--prometheus", url])
    assert (status, err) == (0, "")
    assert json.loads(out)["rows"] == []


class _Canned(Prometheus):
    """A Prometheus whose every answer is ``body`` with HTTP ``status``, read through the
    same code as a real one's."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__("http://127.0.0.1:1")
        self._opener = self  # type: ignore[assignment]
        self.status, self.body = status, body

    def open(self, request: Any, timeout: float) -> io.BytesIO:
        if self.status != 200:
            fp = io.BytesIO(self.body)
            raise urllib.error.HTTPError(request.full_url, self.status, "", Message(), fp)
        return io.BytesIO(self.body)


_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(10**400), 10**400)
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["+Inf", "NaN", "1e400", "-1", "5", "0.1", "2", "2.0", "1" * 5000])
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


def _nested(depth: int, leaf: Any) -> Any:
    for _ in range(depth):
        leaf = [leaf]
    return leaf


_LABELS = st.dictionaries(
    st.sampled_from(["sync_operation", "sync_entity", "sync_outcome", "le", "outbox_name"]),
    _JSON | st.sampled_from(["push", "todo", "+Inf", "0.5", "\x1b[2J", "x" * 10_000]),
)
_SAMPLE = st.fixed_dictionaries(
    {"metric": _LABELS | _JSON, "value": st.tuples(_JSON, _JSON).map(list) | _JSON}
)
_NESTING = st.integers(1, 3000).map(lambda depth: _nested(depth, "1"))
_RESULT = st.lists(_SAMPLE | _JSON | _NESTING.map(lambda v: {"metric": OP, "value": [0, v]}))
_ANSWERS = (
    st.fixed_dictionaries(
        {"status": st.sampled_from(["success", "error"]) | _JSON, "data": st.just(None)}
    ).map(lambda a: {**a, "data": {"resultType": "vector"}})
    | _RESULT.map(lambda r: {"status": "success", "data": {"resultType": "vector", "result": r}})
    | st.fixed_dictionaries({"status": st.just("error"), "error": _JSON | st.text()})
    | _JSON
    | _NESTING
)


def _body(answer: Any) -> bytes:
    try:
        return json.dumps(answer).encode()
    except (ValueError, RecursionError):  # NaN is written; only very deep nesting fails
        return DEEP


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([200, 400, 422, 503]), _ANSWERS | st.binary(max_size=50).map(list))
def test_any_answer_gives_rows_or_a_one_line_error(status: int, answer: Any) -> None:
    server = _Canned(status, _body(answer))
    try:
        before = server.recorded(Window(NOW - 7200, NOW - 3600))
        after = server.recorded(Window(NOW - 3600, NOW))
    except CompareError as error:
        message = str(error)
        assert len(message) < 400 and message.isprintable(), message[:400]
        return
    for row in compare(before, after, Thresholds()):
        json.dumps(row.__dict__, allow_nan=False)  # finite numbers or None


def _trickle(handler: BaseHTTPRequestHandler) -> None:
    """Headers at once, then a byte of body every 0.2 s (for at most 8 s)."""
    handler.send_response(200)
    handler.send_header("Content-Length", "100000")
    handler.end_headers()
    for _ in range(40):
        try:
            handler.wfile.write(b" ")
            handler.wfile.flush()
        except OSError:  # compare gave up
            return
        time.sleep(0.2)


def test_the_timeout_bounds_a_whole_answer_not_each_read(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with _fake_prometheus(_trickle) as (url, _):
        started = time.monotonic()
        status, out, err = _run(capsys, [*WINDOWS, "--prometheus", url, "--timeout", "1"])
        elapsed = time.monotonic() - started
    _one_line(status, out, err)
    assert "timed out" in err
    assert elapsed < 3.0


def test_ctrl_c_exits_130_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from syncperf import cli
    from syncperf._tools import bench
    from syncperf._tools import compare as command

    def interrupted(argv: object) -> int:
        raise KeyboardInterrupt

    for module in (command, bench):
        monkeypatch.setattr(module, "main", interrupted)
    for name in ("compare", "bench"):
        assert cli.main([name]) == 130
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err == f"syncperf {name}: interrupted\n"

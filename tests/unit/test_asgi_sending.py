"""What ``Exchange.send`` records of each response message (``asgi._read.sending``): the
compiled reader records exactly what its pure-Python twin records, returns what it returns
and raises what it raises, for any message and any field values an application, a
middleware in front or a server could leave (even fields whose reading changes the message),
and holds no reference or memory afterwards.

CI runs the unit tests with the compiled path and with ``SYNCPERF_NO_EXTENSIONS=1``: without
it, ``sending`` is its Python twin and these tests compare it with itself.
"""

from __future__ import annotations

import gc
import sys
import tracemalloc
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from syncperf._accel import speedups
from syncperf._client_header import HEADER, MAX_HEADER
from syncperf.asgi import _read
from syncperf.asgi._routes import EVENT_STREAM
from syncperf.asgi._scope import METHODS, SCHEMES

REPLAY = b"idempotent-replayed"


class Loud(bytes):
    """A bytes subclass: the compiled reader leaves it to the Python one."""


class Falsy:
    def __bool__(self) -> bool:
        raise RuntimeError("no truth")


class Recorded:
    """Counts what a runtime, a middleware, an operation and another instrumentation's span
    are told."""

    def __init__(self) -> None:
        self.told: list[Any] = []

    def drop(self, reason: str, message: str, *args: Any) -> None:
        self.told.append(("drop", reason))

    def set_attribute(self, key: str, value: Any) -> None:
        self.told.append(("set_attribute", key, value))


class Middleware:
    def __init__(self, max_body: Any, replay_name: Any) -> None:
        self._max_body = max_body
        self._replay_name = replay_name


class Operation:
    def __init__(self, entity: Any) -> None:
        self.entity = entity


class Ex:
    """The fields of an ``Exchange`` that ``sending`` reads and sets."""

    __slots__ = (
        "answer_encoded", "mw", "op", "owner_span", "replayed", "response_chunks", "rt",
        "sent", "status",
    )  # fmt: skip

    def __init__(self, state: dict[str, Any]) -> None:
        self.rt = Recorded()
        self.status = None
        self.answer_encoded = self.replayed = False
        for key, value in state.items():
            setattr(self, key, value)

    def seen(self) -> dict[str, Any]:
        fields = {k: getattr(self, k) for k in self.__slots__ if k not in ("mw", "rt", "op")}
        chunks = fields["response_chunks"]
        fields["response_chunks"] = list(chunks) if type(chunks) is list else chunks
        spans = self.owner_span.told if isinstance(self.owner_span, Recorded) else None
        return {**fields, "owner_span": spans, "told": self.rt.told}


def outcome(state: dict[str, Any], message: Any, sending: Any) -> Any:
    """What ``sending`` returned or raised, and what it left, from a fresh state."""
    state = {
        **state,
        "response_chunks": (
            list(state["response_chunks"])
            if type(state["response_chunks"]) is list
            else state["response_chunks"]
        ),
        "owner_span": Recorded() if state["owner_span"] else None,
    }
    message = dict(message) if type(message) is dict else message
    ex = Ex(state)
    try:
        returned: Any = ("returned", sending(ex, message))
    except Exception as error:
        returned = ("raised", type(error))
    return returned, ex.seen()


_hostile = st.sampled_from([None, 7, 2.5, "text", b"", bytearray(b"x"), Loud(b"x"), Falsy()])
_bodies = st.one_of(st.binary(max_size=8), st.binary(max_size=8).map(Loud), _hostile)
_more = st.one_of(st.sampled_from([True, False, None, 0, 1, "", "no"]), _hostile)
_statuses = st.one_of(
    st.sampled_from([99, 100, 200, 204, 404, 599, 600, -1, 0, 2**70, -(2**70)]),
    st.sampled_from([True, False, HTTPStatus.OK, HTTPStatus.NOT_FOUND, "200", 200.0]),
    st.integers(),
    _hostile,
)
_pairs = st.tuples(
    st.sampled_from([REPLAY, b"Idempotent-Replayed", b"content-type", b"content-encoding"]),
    st.sampled_from([b"true", b"1", b"no", b"application/json", b"gzip", b""]),
)
_headers = st.one_of(
    st.lists(st.one_of(_pairs, _pairs.map(list), st.tuples(_hostile, _hostile)), max_size=4),
    st.lists(_pairs, max_size=3).map(tuple),
    _hostile,
)
_KINDS = ["http.response.body", "http.response.start", "http.response.pathsend", "other"]


def _message(draw: Any) -> Any:
    message: dict[Any, Any] = {}
    kind = draw(st.one_of(st.sampled_from(_KINDS), _hostile, st.just(None)))
    if kind is not None:
        message["type"] = kind
    for key, values in (
        ("body", _bodies),
        ("more_body", _more),
        ("status", _statuses),
        ("headers", _headers),
        ("path", st.sampled_from([__file__, "/nonexistent/file", 3, None])),
    ):
        if draw(st.booleans()):
            message[key] = draw(values)
    return message


def _optional(**fields: Any) -> Any:
    """A message with each of ``fields`` present or not."""
    return st.fixed_dictionaries({}, optional=fields)


_served = st.one_of(  # what servers are sent: the compiled reader's own cases, and their edges
    st.builds(
        lambda fields: {"type": "http.response.body", **fields},
        _optional(body=st.binary(max_size=8), more_body=st.sampled_from([True, False, None])),
    ),
    st.builds(
        lambda fields: {"type": "http.response.start", **fields},
        _optional(
            status=st.one_of(
                st.integers(98, 601), st.sampled_from([99, 100, 599, 600, 2**70, True])
            ),
            headers=st.one_of(st.lists(_pairs, max_size=3), st.just(()), st.none()),
        ),
    ),
)
_messages = st.one_of(
    _served,
    st.composite(_message)(),
    st.sampled_from([None, [], ("type", "http.response.body"), "http.response.start"]),
)
_states = st.fixed_dictionaries(
    {
        "sent": st.one_of(st.integers(0, 2**70), st.sampled_from([0, 2**63, -5, None, 2.5, "x"])),
        "response_chunks": st.one_of(
            st.none(), st.lists(st.binary(max_size=3), max_size=2), st.sampled_from([(), "x"])
        ),
        "mw": st.builds(
            Middleware,
            st.one_of(st.integers(-1, 64), st.sampled_from([None, 2.5])),
            st.one_of(st.just(REPLAY), st.none(), _hostile),
        ),
        "op": st.one_of(st.none(), st.builds(Operation, st.sampled_from([None, "todo"]))),
        "owner_span": st.booleans(),
    }
)


def _state(**fields: Any) -> dict[str, Any]:
    base = {"sent": 0, "response_chunks": None, "mw": Middleware(8, REPLAY), "op": None}
    return {**base, "owner_span": None, **fields}


@settings(max_examples=1_500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_states, _messages)
@example(
    {"sent": 0, "response_chunks": None, "mw": Middleware(10, REPLAY), "op": Operation(None),
     "owner_span": False},
    {"type": "http.response.start", "status": 200, "headers": [(REPLAY, b"true"), 7]},
)  # fmt: skip
@example(_state(), {"type": "http.response.start", "status": 99})
@example(_state(), {"type": "http.response.start", "status": 600})
@example(_state(response_chunks=[]), {"type": "http.response.body", "body": b"x" * 9})
@example(_state(), {"type": "http.response.body", "body": b"", "more_body": None})
def test_the_compiled_reader_records_what_the_python_one_records(state: Any, message: Any) -> None:
    assert outcome(state, message, _read.sending) == outcome(state, message, _read.sending_py)


def test_a_response_is_recorded_as_it_is_sent() -> None:
    ex = Ex(_state(op=Operation("todo"), response_chunks=None))
    start = {"type": "http.response.start", "status": 201, "headers": [(REPLAY, b"1")]}
    assert _read.sending(ex, start) is False
    assert (ex.status, ex.replayed) == (201, True)
    more = {"type": "http.response.body", "body": b"abc", "more_body": True}
    assert _read.sending(ex, more) is False
    assert _read.sending(ex, {"type": "http.response.body", "body": b"de"}) is True
    assert ex.sent == 5


def test_an_adapters_answer_is_kept_up_to_the_cap() -> None:
    ex = Ex(_state(response_chunks=[], mw=Middleware(4, None)))
    for body in (b"ab", b"cd", b"e"):
        _read.sending(ex, {"type": "http.response.body", "body": body, "more_body": True})
    assert ex.response_chunks == [b"ab", b"cd"]
    assert ex.sent == 5


def test_an_invalid_status_is_counted_not_recorded() -> None:
    ex = Ex(_state())
    assert _read.sending(ex, {"type": "http.response.start", "status": 600}) is False
    assert ex.status is None
    assert ex.rt.told == [("drop", "asgi_invalid_status")]


def test_a_pathsend_counts_the_files_size(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_bytes(b"x" * 11)
    ex = Ex(_state())
    assert _read.sending(ex, {"type": "http.response.pathsend", "path": str(path)}) is True
    assert ex.sent == 11


def test_the_compiled_reader_is_the_one_used() -> None:
    if speedups is None:
        pytest.skip("the compiled path is not built")
    assert _read.sending is speedups.sending


def test_what_servers_are_sent_is_read_without_the_python_twin() -> None:
    if speedups is None:
        pytest.skip("the compiled path is not built")
    handed: list[Any] = []

    def counted(ex: Any, message: Any) -> bool:
        handed.append(message["type"])
        return _read.sending_py(ex, message)

    twins = (_read.read_headers_py, _read.read_scope_py, _read.mark_replayed_py)
    values = (HEADER, MAX_HEADER, EVENT_STREAM, METHODS, SCHEMES)
    speedups.bind_read((*twins, counted), values)
    try:
        ex = Ex(_state(op=Operation("todo"), response_chunks=[]))
        ex.response_chunks = None
        _read.sending(ex, {"type": "http.response.start", "status": 200, "headers": []})
        _read.sending(ex, {"type": "http.response.body", "body": b"{}", "more_body": False})
        assert handed == []
        _read.sending(ex, {"type": "http.response.start", "status": 600})  # invalid: counted
        assert handed == ["http.response.start"]
    finally:
        speedups.bind_read((*twins, _read.sending_py), values)


class Meddling:
    """An exchange whose fields change the message as they are read or set: what the
    compiled reader holds of the message must outlive that."""

    def __init__(self, message: dict[str, Any], victim: str) -> None:
        self.__dict__.update(
            message=message, victim=victim, rt=Recorded(), mw=Middleware(1 << 20, REPLAY),
            answer_encoded=False, replayed=False, response_chunks=None, owner_span=None,
            _sent=0, status=None, _op=Operation("todo"),
        )  # fmt: skip

    def _meddle(self) -> None:
        if self.victim in self.message:
            self.message[self.victim] = [(bytes(bytearray(b"other")), b"1")] * 8  # a new list

    @property
    def sent(self) -> int:
        self._meddle()
        return self.__dict__["_sent"]

    @sent.setter
    def sent(self, value: int) -> None:
        self.__dict__["_sent"] = value

    @property
    def op(self) -> Operation:
        self._meddle()
        return self.__dict__["_op"]

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "status":
            self._meddle()
        super().__setattr__(name, value)

    def seen(self) -> Any:
        keys = ("_sent", "status", "replayed", "response_chunks")
        return {k: self.__dict__[k] for k in keys}, self.rt.told


@pytest.mark.parametrize(
    ("message", "victim"),
    [  # each value a fresh object, held by the message alone
        (lambda: {"type": "http.response.body", "body": bytes(bytearray(b"abcd"))}, "body"),
        (lambda: {"type": "http.response.start", "status": int("404")}, "status"),
        (
            lambda: {"type": "http.response.start", "status": 201, "headers": [(REPLAY, b"1")]},
            "headers",
        ),
    ],
)
def test_a_message_changed_while_it_is_read_is_read_as_python_reads_it(
    message: Callable[[], dict[str, Any]], victim: str
) -> None:
    outcomes = []
    for sending in (_read.sending, _read.sending_py):
        ex = Meddling(message(), victim)
        for _ in range(3):
            ex.message = message()
            try:
                returned: Any = sending(ex, ex.message)
            except Exception as error:
                returned = type(error)
        outcomes.append((returned, ex.seen()))
    assert outcomes[0] == outcomes[1]


def test_sending_a_million_messages_holds_no_reference_nor_memory() -> None:
    body = bytes(bytearray(b"0123456789"))
    start = {"type": "http.response.start", "status": 200, "headers": [(REPLAY, b"true")]}
    chunk = {"type": "http.response.body", "body": body, "more_body": False}
    name, cap, sent = bytes(bytearray(REPLAY)), 1 << 40, 1 << 70
    mw = Middleware(cap, name)
    start["headers"] = [(name, b"true")]
    held = (body, mw, name, cap, sent)
    counts = [sys.getrefcount(v) for v in held]

    def run(n: int) -> None:
        for _ in range(n):
            ex = Ex(_state(mw=mw, op=Operation(None), response_chunks=[], sent=sent))
            ex.response_chunks = None
            _read.sending(ex, start)
            ex.response_chunks = []
            _read.sending(ex, chunk)

    run(2_000)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        run(300_000)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 100_000, grown
    assert [sys.getrefcount(v) for v in held] == counts

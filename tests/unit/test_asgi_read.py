"""What an ``Exchange`` reads per request (``asgi._read``): the request headers, the scope's
method, scheme and root path, the replay header of the response. Each compiled reader returns
exactly what its pure-Python twin returns, for anything a server, a middleware in front or the
application could hand over, and holds no reference or memory afterwards.

CI runs the unit tests with the compiled path and with ``SYNCPERF_NO_EXTENSIONS=1``: without
it, each reader is its Python twin and these tests compare it with itself.
"""

from __future__ import annotations

import gc
import sys
import tracemalloc
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from syncperf._accel import speedups
from syncperf._client_header import HEADER, MAX_HEADER
from syncperf.asgi import _read
from syncperf.asgi._routes import EVENT_STREAM
from syncperf.asgi._scope import METHODS, SCHEMES

IDEM = b"idempotency-key"
FIELDS = frozenset({b"traceparent", b"tracestate", b"baggage"})


class Loud(bytes):
    """A bytes subclass: compared as bytes, but not the exact type the compiled path reads."""


class Odd:
    """Compares equal to nothing, has no ``isdigit``: what a buggy middleware might plant."""

    def __eq__(self, other: object) -> bool:
        return False

    __hash__ = object.__hash__


_names = st.one_of(
    st.sampled_from(
        [b"content-length", IDEM, HEADER, b"accept", b"traceparent", b"baggage", b"host", b""]
    ),
    st.sampled_from([b"content-encoding", b"expect"]),
    st.binary(max_size=16),
)
_hostile = st.one_of(
    st.none(),
    st.integers(),
    st.text(max_size=4),
    st.sampled_from(["\u00b2", "\u0661\u0662", "12", "text/event-stream", 2.5, Odd()]),
    st.binary(max_size=3).map(bytearray),
    st.binary(max_size=4).map(Loud),
)
_values = st.one_of(
    st.sampled_from(
        [b"2", b"007", b"9" * 15, b"9" * 16, b"", b"-1", b" 1", b"1_0", b"\xd9\xa1", EVENT_STREAM]
    ),
    st.sampled_from([b"text/html, " + EVENT_STREAM, b"pending=1", b"x" * (MAX_HEADER - 1)]),
    st.sampled_from([b"gzip", b" IDENTITY\t", b"\x0bidentity\x0c", b"identity,", b"\xa0"]),
    st.sampled_from([b"100-Continue", b"100-continue ", b"100-continue\x00", b"\t\r\n "]),
    st.binary(max_size=20),
    st.text(alphabet="0123456789", min_size=1, max_size=17).map(str.encode),
    _hostile,
)
_pair = st.one_of(
    st.tuples(_names, _values),
    st.tuples(_names, _values).map(list),
    st.tuples(_hostile, _values),
)
_item = st.one_of(
    _pair,
    _pair,
    _pair,
    st.lists(st.one_of(_names, _values), max_size=3).map(tuple),
    st.binary(min_size=2, max_size=2),
    st.text(min_size=2, max_size=2),
    _hostile,
)
_lists = st.one_of(
    st.lists(_item, max_size=8),
    st.lists(_item, max_size=8).map(tuple),
    st.lists(st.tuples(_names, _values), max_size=8),
    _hostile,
    st.dictionaries(_names, _values, max_size=3),
)
_idem = st.one_of(st.just(IDEM), st.sampled_from([b"content-length", HEADER, b"accept"]), _hostile)
_fields = st.one_of(
    st.just(FIELDS), st.just(frozenset()), st.just({b"traceparent"}), st.just([b"baggage"])
)


def outcome(headers: Any, idem: Any, fields: Any, read: Any) -> Any:
    try:
        return ("returned", read(headers, idem, fields))
    except Exception as error:  # the same kind of exception from both, if any
        return ("raised", type(error))


@settings(max_examples=2_000, deadline=None)
@given(_lists, _idem, _fields)
@example([(b"content-length", "\u00b2")], IDEM, FIELDS)  # str.isdigit, then int() refuses
@example([(b"content-length", "\u0661\u0662")], IDEM, FIELDS)  # read as 12 by int()
@example([(b"accept", "text/event-stream")], IDEM, FIELDS)
@example([(IDEM, "k")], IDEM, FIELDS)
@example([(HEADER, None)], IDEM, FIELDS)
@example([(b"x-other", None), (b"content-length", b"3")], IDEM, FIELDS)  # untouched value
@example([(b"content-length", b"3"), 7], IDEM, FIELDS)
@example([b"ab"], IDEM, FIELDS)
@example([(b"content-length", b"9" * 15), (b"content-length", b"9" * 16)], IDEM, FIELDS)
@example([(HEADER, b"x" * 300), (HEADER, b"y" * 300), (HEADER, b"z")], IDEM, FIELDS)
@example([(HEADER, b"x" * MAX_HEADER), (HEADER, b"y")], IDEM, FIELDS)  # at the cap: kept
@example([(b"accept", EVENT_STREAM), (b"accept", None)], IDEM, FIELDS)  # not read again
@example([(b"accept", EVENT_STREAM), (b"accept", b"text/html")], IDEM, FIELDS)  # one asks
@example([(b"traceparent", b"00-x"), (b"host", b"h")], IDEM, FIELDS)  # one carries a parent
@example([(b"content-length", b"9" * 15)], IDEM, FIELDS)  # 15 digits: read
@example([(b"content-length", b"1" * 40)], IDEM, FIELDS)  # past a long long: -1
@example([(Loud(b"content-length"), b"5")], IDEM, FIELDS)
@example([(b"traceparent", b"00-x")], IDEM, [b"traceparent"])
@example([(b"content-encoding", b" \x0b IdEnTiTy\t\r\n\x0c")], IDEM, FIELDS)  # not encoded
@example([(b"content-encoding", b"identity"), (b"content-encoding", b"br")], IDEM, FIELDS)
@example([(b"content-encoding", b"\x1cidentity")], IDEM, FIELDS)  # not ASCII whitespace
@example([(b"content-encoding", b" \t")], IDEM, FIELDS)  # blank: not encoded
@example([(b"expect", b"100-CONTINUE")], IDEM, FIELDS)
@example([(b"expect", b" 100-continue")], IDEM, FIELDS)  # not stripped: no
@example([(b"content-encoding", b"gzip")], IDEM, {b"content-encoding"})  # both read
@example([(b"expect", b"100-continue")], b"expect", FIELDS)  # the idempotency header
def test_the_compiled_reader_returns_what_the_python_reader_returns(
    headers: Any, idem: Any, fields: Any
) -> None:
    assert outcome(headers, idem, fields, _read.read_headers) == outcome(
        headers, idem, fields, _read.read_headers_py
    )


def test_a_list_of_pairs_of_bytes_is_read_in_one_pass() -> None:
    headers = [
        (b"content-length", b"12"),
        (IDEM, b"key-1"),
        (HEADER, b"pending=1"),
        (HEADER, b"acked=2"),
        (b"accept", EVENT_STREAM),
        (b"tracestate", b"a=b"),
    ]
    found = _read.read_headers(headers, IDEM, FIELDS)
    assert found == (12, b"key-1", [b"pending=1", b"acked=2"], True, True, False, False)
    assert found[1] is headers[1][1]  # the value itself, not a copy
    later = [*headers, (b"accept", b"text/html"), (b"host", b"h"), (b"content-length", b"9" * 15)]
    assert _read.read_headers(later, IDEM, FIELDS) == (10**15 - 1, *found[1:])


@pytest.mark.parametrize(
    ("headers", "encoded", "continues"),
    [
        ([(b"content-encoding", b"GZIP")], True, False),
        ([(b"content-encoding", b" identity ")], False, False),
        ([(b"content-encoding", b"")], False, False),
        ([(b"content-encoding", b"identity"), (b"content-encoding", b"br")], True, False),
        ([(b"expect", b"100-Continue")], False, True),
        ([(b"expect", b"100-continue, x")], False, False),
        ([(b"host", b"h"), (b"expect", b"100-continue"), (b"content-encoding", b"gzip")], 1, 1),
    ],
)
def test_a_compressed_body_and_an_expected_continue_are_read_with_the_rest(
    headers: list[tuple[bytes, bytes]], encoded: bool, continues: bool
) -> None:
    found = _read.read_headers(headers, IDEM, FIELDS)
    assert found is not None
    assert found[5:] == (encoded, continues)


def test_a_header_list_that_is_not_pairs_of_bytes_reads_as_none() -> None:
    assert _read.read_headers([(b"accept", "text/event-stream")], IDEM, FIELDS) is None
    assert _read.read_headers([(IDEM, "k")], IDEM, FIELDS) is None
    assert _read.read_headers(5, IDEM, FIELDS) is None


@pytest.mark.parametrize(
    ("sizes", "kept"),
    [
        ((MAX_HEADER - 1, 1, 1), 2),  # 513 bytes joined: the third line is not kept
        ((MAX_HEADER, 1), 2),  # a line after exactly MAX_HEADER bytes is still kept
        ((MAX_HEADER + 1, 1), 1),
    ],
)
def test_sync_client_lines_past_the_cap_are_not_kept(sizes: tuple[int, ...], kept: int) -> None:
    lines = [(HEADER, b"x" * size) for size in sizes]
    found = _read.read_headers(lines, IDEM, FIELDS)
    assert found is not None
    assert found[2] == [value for _, value in lines[:kept]]


@pytest.mark.skipif(speedups is None, reason="the compiled path is not built")
def test_the_compiled_reader_is_the_one_used() -> None:
    assert _read.read_headers is speedups.read_headers


def test_reading_headers_a_million_times_holds_no_reference_nor_memory() -> None:
    key, line, length = (bytes(bytearray(b)) for b in (b"key-1", b"pending=1", b"1" * 10))
    headers = [(b"content-length", length), (IDEM, key), (HEADER, line), (b"baggage", b"a=1")]
    hostile = [(b"content-length", length), (IDEM, key), (b"x", None), Odd()]
    counts = [sys.getrefcount(v) for v in (key, line, length, headers[0], hostile[3])]
    read = _read.read_headers
    for _ in range(2_000):
        read(headers, IDEM, FIELDS)
        read(hostile, IDEM, FIELDS)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(500_000):
            read(headers, IDEM, FIELDS)
            read(hostile, IDEM, FIELDS)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 100_000, grown  # a leaked list, tuple or int per call would hold megabytes
    assert [sys.getrefcount(v) for v in (key, line, length, headers[0], hostile[3])] == counts


class Scope(dict[str, Any]):
    """A dict subclass whose ``get`` answers what a plain dict would not."""

    def get(self, key: str, default: Any = None) -> Any:
        return "GET" if key == "method" else super().get(key, default)


_scope_values = st.one_of(
    st.sampled_from([*METHODS, *SCHEMES, "", "get", "HTTPS", "/api", "\u0130"]), _hostile
)
_scopes = st.one_of(
    st.dictionaries(
        st.sampled_from(["method", "scheme", "root_path", "path"]), _scope_values, max_size=4
    ),
    st.fixed_dictionaries(
        {"method": st.sampled_from(sorted(METHODS)), "scheme": st.sampled_from(sorted(SCHEMES))},
        optional={"root_path": st.sampled_from(["", "/api", None])},
    ),
)


@settings(max_examples=1_000, deadline=None)
@given(_scopes, st.booleans())
@example({"method": "GET", "scheme": "http"}, False)  # no root_path: ""
@example({"method": "GET", "scheme": "http", "root_path": None}, False)
@example({"method": "GET", "scheme": "http", "root_path": ""}, True)
def test_the_compiled_scope_reader_returns_what_the_python_one_returns(
    scope: dict[str, Any], subclass: bool
) -> None:
    given_scope = Scope(scope) if subclass else scope
    assert outcome(given_scope, None, None, lambda s, *_: _read.read_scope(s)) == outcome(
        given_scope, None, None, lambda s, *_: _read.read_scope_py(s)
    )


def test_a_scope_with_known_values_reads_them() -> None:
    scope = {"method": "POST", "scheme": "https", "root_path": "/api"}
    assert _read.read_scope(scope) == ("POST", "https", "/api")
    assert _read.read_scope({"method": "POST", "scheme": "https"}) == ("POST", "https", "")
    assert _read.read_scope({"method": "post", "scheme": "https"}) is None
    assert _read.read_scope({"method": "POST", "scheme": "https", "root_path": None}) is None


class Seen:
    __slots__ = ("replayed",)

    def __init__(self) -> None:
        self.replayed = False


_response_names = st.one_of(
    st.sampled_from([b"idempotent-replayed", b"Idempotent-Replayed", b"content-type"]),
    st.binary(max_size=4),
)
_response_values = st.one_of(
    st.sampled_from([b"true", b"TRUE", b"1", b"True ", b"false", b""]), st.binary(max_size=4)
)
_response_pair = st.one_of(
    st.tuples(_response_names, _response_values),
    st.tuples(_response_names, _response_values).map(list),
    st.tuples(st.one_of(_response_names, _hostile), st.one_of(_response_values, _hostile)),
)
_response_headers = st.one_of(
    st.lists(st.one_of(_response_pair, _response_pair, _item), max_size=5),
    st.lists(st.tuples(_response_names, _response_values), max_size=5).map(tuple),
    _hostile,
)


def replay_outcome(headers: Any, name: Any, mark: Any) -> Any:
    seen = Seen()
    try:
        mark(seen, headers, name)
    except Exception as error:
        return ("raised", type(error), seen.replayed)
    return ("returned", seen.replayed)


@settings(max_examples=1_000, deadline=None)
@given(_response_headers, st.one_of(st.just(b"idempotent-replayed"), _hostile))
@example([(b"Idempotent-Replayed", b"TRUE"), 7], b"idempotent-replayed")  # marked, then raised
@example([(b"idempotent-replayed", "true")], b"idempotent-replayed")
@example([(b"idempotent-replayed", bytearray(b"1"))], b"idempotent-replayed")
def test_the_compiled_replay_reader_marks_what_the_python_one_marks(
    headers: Any, name: Any
) -> None:
    assert replay_outcome(headers, name, _read.mark_replayed) == replay_outcome(
        headers, name, _read.mark_replayed_py
    )


def test_a_replay_header_saying_true_marks_the_request() -> None:
    seen = Seen()
    headers = [(b"content-type", b"application/json"), (b"Idempotent-Replayed", b"True")]
    _read.mark_replayed(seen, headers, b"idempotent-replayed")
    assert seen.replayed is True
    seen = Seen()
    _read.mark_replayed(seen, [(b"idempotent-replayed", b"no")], b"idempotent-replayed")
    assert seen.replayed is False


def test_reading_scopes_and_replays_a_million_times_holds_no_reference_nor_memory() -> None:
    method, root = "".join(["PO", "ST"]), "/" + "api" * 3
    scope = {"method": method, "scheme": "https", "root_path": root}
    name, value = bytes(bytearray(b"idempotent-replayed")), bytes(bytearray(b"true"))
    response = [(b"content-type", b"application/json"), (name, value)]
    counts = [sys.getrefcount(v) for v in (method, root, name, value, response[1])]
    seen = Seen()
    for _ in range(2_000):
        _read.read_scope(scope)
        _read.mark_replayed(seen, response, name)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(500_000):
            _read.read_scope(scope)
            _read.mark_replayed(seen, response, name)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 100_000, grown
    assert [sys.getrefcount(v) for v in (method, root, name, value, response[1])] == counts

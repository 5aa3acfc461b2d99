"""The request headers ``Exchange.open`` reads (``asgi._headers.read_headers``): the compiled
reader returns exactly what the pure-Python one returns, for any header list a server or a
middleware in front could hand over, and holds no reference or memory afterwards.

CI runs the unit tests with the compiled path and with ``SYNCPERF_NO_EXTENSIONS=1``: without
it, ``read_headers`` is the Python reader and these tests compare it with itself.
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
from syncperf.asgi import _headers
from syncperf.asgi._routes import EVENT_STREAM

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
@example([(b"accept", EVENT_STREAM), (b"accept", None)], IDEM, FIELDS)  # not read again
@example([(Loud(b"content-length"), b"5")], IDEM, FIELDS)
@example([(b"traceparent", b"00-x")], IDEM, [b"traceparent"])
def test_the_compiled_reader_returns_what_the_python_reader_returns(
    headers: Any, idem: Any, fields: Any
) -> None:
    assert outcome(headers, idem, fields, _headers.read_headers) == outcome(
        headers, idem, fields, _headers.read_headers_py
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
    found = _headers.read_headers(headers, IDEM, FIELDS)
    assert found == (12, b"key-1", [b"pending=1", b"acked=2"], True, True)
    assert found[1] is headers[1][1]  # the value itself, not a copy


def test_a_header_list_that_is_not_pairs_of_bytes_reads_as_none() -> None:
    assert _headers.read_headers([(b"accept", "text/event-stream")], IDEM, FIELDS) is None
    assert _headers.read_headers([(IDEM, "k")], IDEM, FIELDS) is None
    assert _headers.read_headers(5, IDEM, FIELDS) is None


def test_sync_client_lines_past_the_cap_are_not_kept() -> None:
    lines = [(HEADER, b"x" * (MAX_HEADER - 1)), (HEADER, b"y"), (HEADER, b"z")]
    found = _headers.read_headers(lines, IDEM, FIELDS)
    assert found is not None
    assert found[2] == [b"x" * (MAX_HEADER - 1), b"y"]


@pytest.mark.skipif(speedups is None, reason="the compiled path is not built")
def test_the_compiled_reader_is_the_one_used() -> None:
    assert _headers.read_headers is speedups.read_headers


def test_reading_headers_a_million_times_holds_no_reference_nor_memory() -> None:
    key, line, length = b"key-" + b"1" * 8, b"pending=" + b"1" * 8, b"1" * 10
    headers = [(b"content-length", length), (IDEM, key), (HEADER, line), (b"baggage", b"a=1")]
    hostile = [(b"content-length", length), (IDEM, key), (b"x", None), Odd()]
    counts = [sys.getrefcount(v) for v in (key, line, length, headers[0], hostile[3])]
    read = _headers.read_headers
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

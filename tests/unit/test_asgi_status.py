"""The status an application sends in ``http.response.start``: only an HTTP status is recorded.

The status is the application's (or a framework's) value, not checked by every server before
the middleware sees it: a bool, a float, a string, an int beyond int64 (which the OTLP encoder
cannot encode) or a number outside 100..599 is dropped (``asgi_invalid_status``), logged once,
never raised; the request is recorded without ``http.response.status_code``. Distinct
statuses cannot grow the middleware's per-series cache past its bound.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncperf.asgi import SyncPerfMiddleware, _http
from syncperf.testing import Capture, capture
from tests._asgi import call, http_scope

ROUTES = {"/sync/pull": "pull"}


def _answering(status: Any) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


def _cached(cap: Capture) -> int:
    shared = cap.runtime.state(_http.AsgiState)
    return sum(len(series.series) for series in shared._series.values())


_invalid = st.one_of(
    st.booleans(),
    st.floats(),
    st.integers(max_value=99),
    st.integers(min_value=600),
    st.integers(min_value=2**63 - 10, max_value=2**80),
    st.text(max_size=5),
    st.binary(max_size=5),
    st.none(),
    st.just(200.0),
    st.lists(st.integers(), max_size=2),
)


class _HostileInt(int):
    """An int subclass whose every method raises: its value is what counts."""

    def _raise(self, *args: Any) -> Any:
        raise RuntimeError("hostile")

    __repr__ = __str__ = __hash__ = __eq__ = __lt__ = __le__ = __gt__ = __ge__ = _raise
    __int__ = __index__ = _raise


_valid = st.one_of(
    st.integers(min_value=100, max_value=599),
    st.sampled_from(list(HTTPStatus)),  # what Starlette's and FastAPI's users pass
    st.integers(min_value=100, max_value=599).map(_HostileInt),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_valid, _invalid))
def test_only_an_http_status_is_recorded_and_a_hostile_one_never_raises(status: Any) -> None:
    number = int.__int__(status) if isinstance(status, int) else None
    valid = not isinstance(status, bool) and number is not None and 100 <= number <= 599
    with capture() as cap:  # strict: a hostile status is still never raised
        app = SyncPerfMiddleware(_answering(status), routes=ROUTES)
        for path in ("/sync/pull", "/other"):
            sent = call(app, http_scope(path=path))
            assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
            assert sent[0]["status"] is status  # the server gets what the app sent
        points = cap.points("http.server.request.duration")
        assert sum(p.count for p in points) == 2
        codes = {p.attributes.get("http.response.status_code") for p in points}
        (span,) = cap.spans()
        code = (span.attributes or {}).get("http.response.status_code")
        if valid:
            assert codes == {number} and code == number
            assert type(code) is int and {type(c) for c in codes} == {int}
        else:
            assert codes == {None} and code is None
        assert cap.total("syncperf.dropped", {"syncperf.reason": "asgi_invalid_status"}) == (
            0 if valid else 2
        )
        assert cap.total("syncperf.dropped", {"syncperf.reason": "asgi_http_metrics_failed"}) == 0


def test_an_invalid_status_is_logged_once_by_type_never_its_content(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with capture(strict=False):
        for status in ("SECRET-TOKEN", 2**70, True):
            call(SyncPerfMiddleware(_answering(status), routes=ROUTES), http_scope())
    logged = [r.getMessage() for r in caplog.records if "asgi_invalid_status" in r.getMessage()]
    assert len(logged) == 1
    assert "SECRET-TOKEN" not in logged[0] and str(2**70) not in logged[0]


def test_distinct_invalid_statuses_add_no_series_nor_cache_entries() -> None:
    with capture() as cap:
        for index in range(300):
            app = SyncPerfMiddleware(_answering(1000 + index), routes=ROUTES)
            call(app, http_scope(path="/other"))
        assert _cached(cap) == 1
        (point,) = cap.points("http.server.request.duration")
        assert point.count == 300


def test_the_series_cache_is_bounded_and_requests_past_it_are_still_recorded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_http, "MAX_CACHED", 20)
    with capture(max_series=50) as cap:  # caches up to max(max_series, MAX_CACHED)
        for status in range(100, 600):
            for _ in range(2):
                call(
                    SyncPerfMiddleware(_answering(status), routes=ROUTES), http_scope(path="/other")
                )
        assert _cached(cap) <= 50
        points = cap.points("http.server.request.duration")
        assert len(points) == 50  # 49 statuses and the overflow series
        assert sum(p.count for p in points) == 1000
        overflow = [p for p in points if p.attributes.get("otel.metric.overflow")]
        assert len(overflow) == 1 and overflow[0].count == 2 * (500 - 49)

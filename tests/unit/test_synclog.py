"""Sync logs: one record per finished operation on ``syncperf.sync``, sampled and rate-limited."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanContext, TraceFlags

import syncperf
from syncperf import Config, ConfigError, _synclog
from syncperf._config import SYNC_LOG_LEVELS
from syncperf.testing import capture

SECRET = "sk_live_planted_7f3a"
_CORRELATION = ("trace_id", "span_id", "dd.trace_id", "dd.span_id")


def fields(record: logging.LogRecord) -> dict[str, Any]:
    """The record's sync-log fields (what ``extra=`` set)."""
    return {
        k: v
        for k, v in vars(record).items()
        if k.startswith(("sync.", "error.", "dd.")) or k in ("trace_id", "span_id")
    }


def ids(context: SpanContext) -> dict[str, str]:
    return {
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
        "dd.trace_id": str(context.trace_id & (2**64 - 1)),
        "dd.span_id": str(context.span_id),
    }


@pytest.fixture
def records(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Captures ``syncperf.sync`` with the logger at INFO (successes are DEBUG)."""
    with caplog.at_level(logging.INFO, logger="syncperf.sync"):
        yield caplog


def sync_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "syncperf.sync"]


def test_a_finished_push_logs_one_record_with_exact_fields(
    records: pytest.LogCaptureFixture,
) -> None:
    with capture(sync_log_levels={"success": "INFO"}) as cap:
        with syncperf.sync_operation("push", entity="todo") as op:
            op.set_batch_size(4)
            op.record_items(3, change="created")
            op.record_items(1, entity="note", change="deleted")
            op.record_idempotency_hit()
        (span,) = cap.spans()
    (record,) = sync_records(records)
    found = fields(record)
    duration = found.pop("sync.operation.duration")
    assert found == {
        "sync.event": "end",
        "sync.operation": "push",
        "sync.entity": "todo",
        "sync.outcome": "success",
        "sync.batch.size": 4,
        "sync.items": 4,
        "sync.conflicts": 0,
        "sync.idempotency.hit": True,
        **ids(span.context),
    }
    assert 0 < duration == pytest.approx((span.end_time - span.start_time) / 1e9, abs=1e-3)
    assert record.levelno == logging.INFO
    assert record.getMessage().startswith("sync push todo: success in ")


def test_conflicts_are_logged_by_entity_and_resolution(records: pytest.LogCaptureFixture) -> None:
    with capture(), syncperf.sync_operation("push", entity="todo") as op:
        op.record_conflict(count=2, resolution="server_wins")
        op.record_conflict(entity="note", resolution="merged")
    (record,) = sync_records(records)
    assert record.levelno == logging.INFO
    assert fields(record)["sync.outcome"] == "conflict"
    assert fields(record)["sync.conflicts"] == 3
    assert fields(record)["sync.conflicts.detail"] == [
        {"sync.entity": "todo", "sync.conflict.resolution": "server_wins", "count": 2},
        {"sync.entity": "note", "sync.conflict.resolution": "merged", "count": 1},
    ]


def test_an_error_logs_its_type_never_its_message(records: pytest.LogCaptureFixture) -> None:
    with capture(), pytest.raises(ValueError), syncperf.sync_operation("pull", entity="todo"):
        raise ValueError(f"token={SECRET} in payload")
    (record,) = sync_records(records)
    assert record.levelno == logging.WARNING
    assert fields(record)["error.type"] == "ValueError"
    assert fields(record)["sync.outcome"] == "error"
    assert record.exc_info is None
    assert record.getMessage().startswith("sync pull todo: error (ValueError) in ")
    assert SECRET not in json.dumps(vars(record), default=repr)


def test_successes_are_debug_by_default_so_an_info_logger_writes_none(
    records: pytest.LogCaptureFixture,
) -> None:
    with capture(), syncperf.sync_operation("push"):
        pass
    assert sync_records(records) == []


def test_a_disabled_logger_decides_with_one_check_and_builds_nothing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def forbidden(*args: object) -> dict[str, Any]:
        raise AssertionError("fields built for a record nobody writes")

    monkeypatch.setattr(_synclog, "_fields", forbidden)
    with caplog.at_level(logging.ERROR, logger="syncperf.sync"), capture():
        with syncperf.sync_operation("push") as op:
            op.record_conflict()
        with pytest.raises(KeyError), syncperf.sync_operation("push"):
            raise KeyError("x")
    assert sync_records(caplog) == []


def test_levels_are_configured_per_outcome(records: pytest.LogCaptureFixture) -> None:
    with capture(sync_log_levels={"conflict": "ERROR", "error": 50}):
        with syncperf.sync_operation("push") as op:
            op.record_conflict()
        with pytest.raises(KeyError), syncperf.sync_operation("push"):
            raise KeyError("x")
    assert [r.levelno for r in sync_records(records)] == [logging.ERROR, logging.CRITICAL]


def test_the_sample_rate_thins_successes_only(records: pytest.LogCaptureFixture) -> None:
    with capture(sync_log_levels={"success": "INFO"}, sync_log_sample_rate=0.0):
        for _ in range(20):
            with syncperf.sync_operation("pull"):
                pass
        with syncperf.sync_operation("push") as op:
            op.record_conflict()
        with pytest.raises(KeyError), syncperf.sync_operation("push"):
            raise KeyError("x")
    assert [fields(r)["sync.outcome"] for r in sync_records(records)] == ["conflict", "error"]


def test_slow_operations_are_always_logged_at_the_slow_level(
    records: pytest.LogCaptureFixture,
) -> None:
    with capture(sync_log_sample_rate=0.0, slow_threshold=1e-9), syncperf.sync_operation("pull"):
        pass
    (record,) = sync_records(records)
    assert record.levelno == logging.WARNING
    assert fields(record)["sync.outcome"] == "success"


def test_records_over_the_rate_limit_are_dropped_and_counted(
    records: pytest.LogCaptureFixture,
) -> None:
    with capture(sync_log_rate_limit=1.0) as cap:
        for _ in range(5):
            with syncperf.sync_operation("push") as op:
                op.record_conflict()
        dropped = cap.total("syncperf.dropped", {"syncperf.reason": "sync_log_limited"})
    assert len(sync_records(records)) == 1
    assert dropped == 4


def test_a_sampled_out_error_carries_the_ids_of_its_rescued_span(
    records: pytest.LogCaptureFixture,
) -> None:
    with (
        capture(sampler=ALWAYS_OFF) as cap,
        pytest.raises(KeyError),
        syncperf.sync_operation("push"),
    ):
        raise KeyError("x")
    (span,) = cap.spans()
    (record,) = sync_records(records)
    assert {k: fields(record)[k] for k in _CORRELATION} == ids(span.context)


def test_a_handler_emitting_the_record_sees_the_operations_span_current(
    records: pytest.LogCaptureFixture,
) -> None:
    """The end record is emitted after the operation left the context: its span is made
    current again for the handlers (OpenTelemetry's ``LoggingHandler`` reads it), and the
    context is as it was afterwards."""
    from opentelemetry import trace

    seen: list[SpanContext] = []

    class Reader(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(trace.get_current_span().get_span_context())

    reader = Reader()
    logging.getLogger("syncperf.sync").addHandler(reader)
    try:
        with capture() as cap, pytest.raises(KeyError), syncperf.sync_operation("push"):
            raise KeyError("x")
    finally:
        logging.getLogger("syncperf.sync").removeHandler(reader)
    (span,) = cap.spans()
    assert seen == [span.context]
    assert not trace.get_current_span().get_span_context().is_valid


def test_a_sampled_out_success_carries_the_ids_of_the_enclosing_span(
    records: pytest.LogCaptureFixture,
) -> None:
    outer = TracerProvider().get_tracer("app")
    with (
        capture(sampler=ALWAYS_OFF, sync_log_levels={"success": "INFO"}),
        outer.start_as_current_span("request") as request,
        syncperf.sync_operation("pull"),
    ):
        pass
    (record,) = sync_records(records)
    assert {k: fields(record)[k] for k in _CORRELATION} == ids(request.get_span_context())


def test_datadog_ids_are_the_decimal_lower_64_bits() -> None:
    context = SpanContext(
        0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, False, TraceFlags(1)
    )
    assert _synclog.correlation(context) == {
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "span_id": "00f067aa0ba902b7",
        "dd.trace_id": "11803532876627986230",
        "dd.span_id": "67667974448284343",
    }


def test_start_records_are_written_only_for_the_operations_asked(
    records: pytest.LogCaptureFixture,
) -> None:
    with capture(sync_log_starts=["pull"]) as cap:
        with syncperf.sync_operation("pull", entity="todo"):
            pass
        with syncperf.sync_operation("push", entity="todo"):
            pass
        (pull, _) = cap.spans()
    start, end = sync_records(records)  # the end of a started pull is logged, though DEBUG
    assert fields(start) == {
        "sync.event": "start",
        "sync.operation": "pull",
        "sync.entity": "todo",
        **ids(pull.context),
    }
    assert start.getMessage() == "sync pull todo: started"
    assert (start.levelno, end.levelno) == (logging.INFO, logging.INFO)
    assert fields(end)["sync.event"] == "end"
    assert fields(end)["span_id"] == fields(start)["span_id"]


def test_a_failing_log_handler_never_reaches_the_application(
    records: pytest.LogCaptureFixture,
) -> None:
    class Broken(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            raise RuntimeError(SECRET)

    logger = logging.getLogger("syncperf.sync")
    broken = Broken()
    logger.addFilter(broken)
    try:
        with capture(strict=False) as cap:
            with syncperf.sync_operation("push") as op:
                op.record_conflict()
            failed = cap.total("syncperf.dropped", {"syncperf.reason": "sync_log_failed"})
    finally:
        logger.removeFilter(broken)
    assert failed == 1


def test_python_json_logger_writes_the_fields_as_json(caplog: pytest.LogCaptureFixture) -> None:
    from pythonjsonlogger.json import JsonFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("syncperf.sync")
    logger.addHandler(handler)
    try:
        with caplog.at_level(logging.INFO, logger="syncperf.sync"), capture() as cap:
            with syncperf.sync_operation("push", entity="todo") as op:
                op.record_conflict(resolution="server_wins")
            (span,) = cap.spans()
    finally:
        logger.removeHandler(handler)
    line = json.loads(stream.getvalue())
    assert line["message"].startswith("sync push todo: conflict in ")
    assert line["sync.outcome"] == "conflict"
    assert line["sync.conflicts.detail"] == [
        {"sync.entity": "todo", "sync.conflict.resolution": "server_wins", "count": 1}
    ]
    assert {k: line[k] for k in _CORRELATION} == ids(span.context)


# --- configuration -------------------------------------------------------------------------

_KINDS = st.sampled_from(sorted(SYNC_LOG_LEVELS))
_NAMES = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "WARN": 30, "ERROR": 40, "CRITICAL": 50}


@given(st.dictionaries(_KINDS, st.sampled_from(sorted(_NAMES)) | st.integers(1, 50)))
def test_levels_from_the_environment_merge_over_the_defaults(levels: dict[str, Any]) -> None:
    raw = ",".join(f"{kind}={str(level).lower()}" for kind, level in levels.items())
    config = Config.from_env({"SYNCPERF_SYNC_LOG_LEVELS": raw})
    expected = {**SYNC_LOG_LEVELS, **{k: _NAMES.get(str(v), v) for k, v in levels.items()}}
    assert dict(config.sync_log_levels) == expected


@given(st.text(max_size=40))
def test_any_levels_variable_either_parses_or_names_the_setting(raw: str) -> None:
    try:
        config = Config.from_env({"SYNCPERF_SYNC_LOG_LEVELS": raw})
    except ConfigError as error:
        assert error.option in ("SYNCPERF_SYNC_LOG_LEVELS", "sync_log_levels")
    else:
        assert set(config.sync_log_levels) == set(SYNC_LOG_LEVELS)
        assert all(1 <= level <= 50 for level in config.sync_log_levels.values())


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("sync_log_levels", {"success": "LOUD"}),
        ("sync_log_levels", {"debug": "INFO"}),
        ("sync_log_levels", {"error": 0}),
        ("sync_log_levels", "INFO"),
        ("sync_log_sample_rate", 1.5),
        ("sync_log_rate_limit", 0),
        ("sync_log_starts", "pull"),
    ],
)
def test_bad_sync_log_settings_raise_config_error(option: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        Config(**{option: value})
    assert info.value.option == option


def test_sync_log_settings_come_from_the_environment() -> None:
    config = Config.from_env(
        {
            "SYNCPERF_SYNC_LOG_SAMPLE_RATE": "0.25",
            "SYNCPERF_SYNC_LOG_RATE_LIMIT": "50",
            "SYNCPERF_SYNC_LOG_STARTS": "pull, initial_pull",
        }
    )
    assert config.sync_log_sample_rate == 0.25
    assert config.sync_log_rate_limit == 50.0
    assert config.sync_log_starts == frozenset({"pull", "initial_pull"})


def test_a_level_change_applies_at_the_next_check(caplog: pytest.LogCaptureFixture) -> None:
    from syncperf import _runtime

    with capture():
        log = _runtime.current().state(_synclog.SyncLog)  # reads the levels: WARNING
        with caplog.at_level(logging.DEBUG, logger="syncperf.sync"):
            with syncperf.sync_operation("push"):  # not logged yet
                pass
            assert sync_records(caplog) == []
            log.next_check = 0  # a second later
            with syncperf.sync_operation("push"):
                pass
    (record,) = sync_records(caplog)
    assert record.levelno == logging.DEBUG


def test_the_rate_limit_refills_over_time(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0]
    monkeypatch.setattr(_synclog, "_perf", lambda: now[0])
    bucket = _synclog._Bucket(2.0)  # two a second, a burst of two
    assert [bucket.take() for _ in range(3)] == [True, True, False]
    now[0] += 500_000_000
    assert [bucket.take() for _ in range(2)] == [True, False]
    now[0] += 10_000_000_000  # a long pause refills one second's worth, not more
    assert [bucket.take() for _ in range(3)] == [True, True, False]


class _Raising(logging.Handler):
    """A handler whose ``emit`` raises (one written without ``handleError``)."""

    def emit(self, record: logging.LogRecord) -> None:
        raise RuntimeError(SECRET)


@pytest.fixture
def raising_root() -> Iterator[None]:
    root = logging.getLogger()
    handler = _Raising()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)


def test_a_raising_root_handler_never_reaches_a_decorated_handler(
    raising_root: None, records: pytest.LogCaptureFixture
) -> None:
    """syncperf's own logged-once warnings (a rejected value, a failed sync log record) go
    through the application's handlers too: one that raises is syncperf's failure, never the
    caller's."""

    @syncperf.instrument_sync("push", entity="todo")
    def push() -> int:
        syncperf.current_operation().record_conflict()
        return 1

    with capture(strict=False) as cap:
        assert push() == 1
        with syncperf.sync_operation("push") as op:
            op.set_batch_size(-1)  # rejected: counted, logged once
        assert cap.total("syncperf.dropped", {"syncperf.reason": "invalid_batch_size"}) == 1
        assert cap.total("syncperf.dropped", {"syncperf.reason": "sync_log_failed"}) == 1
        assert sum(p.count for p in cap.points("sync.operation.duration")) == 2


def test_a_raising_root_handler_never_reaches_the_asgi_application(raising_root: None) -> None:
    import asyncio

    import httpx
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from syncperf.asgi import SyncPerfMiddleware, SyncRoute

    ran: list[bool] = []

    async def pull(request: Request) -> JSONResponse:
        ran.append(True)
        return JSONResponse({})

    app = SyncPerfMiddleware(
        Starlette(routes=[Route("/pull", pull)]), routes={"/pull": SyncRoute("pull")}
    )

    async def call() -> int:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            answer = await client.get("/pull", headers={"sync-client": "pending=oops("})
            return answer.status_code

    with capture(strict=False) as cap:
        assert asyncio.run(call()) == 200
        dropped = cap.total("syncperf.dropped", {"syncperf.reason": "invalid_client_header"})
    assert ran == [True]
    assert dropped == 1

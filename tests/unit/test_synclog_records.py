"""Sync-log records under a log-record factory, and field names that never clash with logging's."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import syncperf
from syncperf.testing import capture
from tests.unit.test_synclog import ids

_CORRELATION = ("trace_id", "span_id", "dd.trace_id", "dd.span_id")
_RESERVED = set(vars(logging.LogRecord("n", logging.INFO, "p", 1, "m", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
"""Every attribute logging sets on a record (``makeRecord`` refuses them in ``extra=``)."""


@pytest.fixture
def factory() -> Iterator[Callable[[dict[str, Any]], None]]:
    """Installs a record factory that stamps the given attributes on every record."""
    old = logging.getLogRecordFactory()

    def install(stamp: dict[str, Any]) -> None:
        def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = old(*args, **kwargs)
            record.__dict__.update(stamp)
            return record

        logging.setLogRecordFactory(make)

    try:
        yield install
    finally:
        logging.setLogRecordFactory(old)


def sync_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "syncperf.sync"]


def test_a_factory_that_stamps_trace_ids_keeps_every_record_with_the_operations_ids(
    factory: Callable[[dict[str, Any]], None], caplog: pytest.LogCaptureFixture
) -> None:
    factory({"trace_id": "", "span_id": "", "dd.trace_id": "0"})
    with caplog.at_level(logging.INFO, logger="syncperf.sync"), capture(strict=False) as cap:
        with syncperf.sync_operation("push", entity="todo") as op:
            op.record_conflict()
        (span,) = cap.spans()
        assert cap.total("syncperf.dropped") == 0
    (record,) = sync_records(caplog)
    assert {k: getattr(record, k) for k in _CORRELATION} == ids(span.context)
    assert record.getMessage().startswith("sync push todo: conflict in ")
    assert getattr(record, "sync.outcome") == "conflict"


def test_a_factory_with_attributes_of_its_own_keeps_them_beside_the_fields(
    factory: Callable[[dict[str, Any]], None], caplog: pytest.LogCaptureFixture
) -> None:
    factory({"service": "api"})
    with (
        caplog.at_level(logging.INFO, logger="syncperf.sync"),
        capture(),
        syncperf.sync_operation("pull") as op,
    ):
        op.record_conflict()
    (record,) = sync_records(caplog)
    assert record.service == "api"
    assert getattr(record, "sync.operation") == "pull"


def test_a_start_record_under_a_factory_is_written_too(
    factory: Callable[[dict[str, Any]], None], caplog: pytest.LogCaptureFixture
) -> None:
    factory({"trace_id": "", "span_id": ""})
    with (
        caplog.at_level(logging.INFO, logger="syncperf.sync"),
        capture(sync_log_starts=("push",)),
        syncperf.sync_operation("push") as op,
    ):
        op.record_items(1)
    assert [getattr(r, "sync.event") for r in sync_records(caplog)] == ["start", "end"]


def test_a_record_below_the_loggers_level_is_not_written_under_a_factory(
    factory: Callable[[dict[str, Any]], None], caplog: pytest.LogCaptureFixture
) -> None:
    factory({"trace_id": ""})
    with (
        caplog.at_level(logging.ERROR, logger="syncperf.sync"),
        capture(),
        syncperf.sync_operation("push") as op,
    ):
        op.record_conflict()
    assert sync_records(caplog) == []


def test_no_field_of_a_full_record_is_an_attribute_logging_sets(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    logger = logging.getLogger("syncperf.sync")
    make = logger.makeRecord
    extras: list[dict[str, Any]] = []

    def spy(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        extras.append(dict(vars(record)))
        return record

    monkeypatch.setattr(logger, "makeRecord", spy)
    with caplog.at_level(logging.INFO, logger="syncperf.sync"), capture(strict=False) as cap:
        with syncperf.sync_operation("push", entity="todo") as op:
            op.set_batch_size(2)
            op.record_items(2)
            op.record_conflict(resolution="server_wins")
            op.record_idempotency_hit()
            op.add_db_time(1000)
        with pytest.raises(RuntimeError), syncperf.sync_operation("push", entity="todo"):
            raise RuntimeError("boom")
        assert cap.total("syncperf.dropped") == 0
    assert len(extras) == 2
    plain = set(vars(logging.LogRecord("n", logging.INFO, "p", 1, "m", None, None)))
    for attributes in extras:
        names = set(attributes) - plain
        assert {"sync.event", "sync.conflicts", "trace_id", "dd.span_id"} <= names
        assert not names & _RESERVED
    assert "error.type" in extras[1]
    assert "sync.conflicts.detail" in extras[0]
    assert "sync.db.queries" in extras[0]

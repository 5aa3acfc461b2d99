"""A transactional outbox with a relay worker, instrumented with ``syncperf.outbox``.

A sync push writes its todos *and* one outbox row per change in one transaction; a relay
claims pending rows (a lease, committed, so a crashed relay's rows come back with a higher
attempt number), publishes them to a broker and marks them published, or dead after
``max_attempts``. syncperf records enqueues (on commit), publishes, lag, failures, retries,
dead letters, and the outbox's depth and oldest age through the built-in SQLAlchemy probe.

Run it (SQLite by default; any SQLAlchemy URL with a sync driver works)::

    python examples/outbox_relay.py
    python examples/outbox_relay.py --url postgresql+psycopg://postgres@127.0.0.1/postgres
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    MetricExporter,
    MetricExportResult,
    MetricsData,
)
from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

import syncperf
from syncperf.outbox import Outbox, sqlalchemy_probe

metadata = MetaData()
todos = Table(
    "todos",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("title", Text, nullable=False),
)
outbox = Table(  # Debezium's outbox columns, plus what a polling relay needs
    "outbox",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("aggregatetype", String(255), nullable=False),
    Column("aggregateid", String(255), nullable=False),
    Column("type", String(255), nullable=False),
    Column("payload", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
    Column("status", String(16), nullable=False, default="pending", index=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("locked_until", DateTime(timezone=True)),
    Column("traceparent", String(55)),
    Column("last_error", Text),
)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands timestamps back naive (they were stored in UTC)."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


class BrokerError(Exception):
    """The broker refused a message (retried, then dead-lettered)."""


class RelayCrash(Exception):
    """Simulates the relay process dying in the middle of a batch."""


@dataclass
class Broker:
    """An in-memory stand-in for Kafka or RabbitMQ, with failure injection.

    ``fail(row) -> Exception | None`` decides per send whether (and how) it fails.
    """

    fail: Callable[[dict[str, Any]], Exception | None] = lambda row: None
    delivered: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, row: dict[str, Any]) -> None:
        error = self.fail(row)
        if error is not None:
            raise error
        with self.lock:
            self.delivered.append(row["id"])


class TodoService:
    """The sync backend: a push writes todos and outbox rows in one transaction."""

    def __init__(self, engine: Engine, box: Outbox) -> None:
        self.engine = engine
        self.outbox = box
        self.push = syncperf.instrument_sync("push", entity="todo")(self._push)

    def _push(self, titles: Sequence[str], *, fail: bool = False) -> list[str]:
        ids = []
        with Session(self.engine) as session, session.begin():
            for title in titles:
                todo_id = str(uuid.uuid4())
                session.execute(insert(todos).values(id=todo_id, title=title))
                session.execute(
                    insert(outbox).values(
                        id=str(uuid.uuid4()),
                        aggregatetype="todo",
                        aggregateid=todo_id,
                        type="todo.created",
                        payload=json.dumps({"id": todo_id, "title": title}),
                        created_at=utcnow(),
                        status="pending",
                        attempts=0,
                        # the push's creation context travels with the row to the relay
                        traceparent=self.outbox.enqueue(session=session),
                    )
                )
                ids.append(todo_id)
            syncperf.current_operation().set_batch_size(len(titles))
            if fail:  # e.g. a conflict found late: nothing is written, nothing is counted
                raise ValueError("push rejected")
        return ids


class Relay:
    """Polls the outbox: claim a batch (committed lease), publish it, mark it."""

    def __init__(
        self,
        engine: Engine,
        box: Outbox,
        broker: Broker,
        *,
        batch_size: int = 10,
        max_attempts: int = 3,
        lease: float = 5.0,
    ) -> None:
        self.engine = engine
        self.outbox = box
        self.broker = broker
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.lease = timedelta(seconds=lease)

    def claim(self) -> list[dict[str, Any]]:
        now = utcnow()
        with Session(self.engine) as session, session.begin():
            ready = (
                select(outbox.c.id)
                .where(outbox.c.status == "pending")
                .where(or_(outbox.c.locked_until.is_(None), outbox.c.locked_until < now))
                .order_by(outbox.c.created_at)
                .limit(self.batch_size)
                .with_for_update(skip_locked=True)
            )
            claimed = (
                session.execute(
                    update(outbox)
                    .where(outbox.c.id.in_(ready.scalar_subquery()))
                    .values(attempts=outbox.c.attempts + 1, locked_until=now + self.lease)
                    .returning(outbox)
                )
                .mappings()
                .all()
            )
        rows = [dict(row) for row in claimed]
        rows.sort(key=lambda row: as_utc(row["created_at"]))  # type: ignore[arg-type,return-value]
        return rows

    def run_once(self) -> int:
        """Publish one batch; return how many messages it claimed."""
        rows = self.claim()
        if not rows:
            return 0
        with (
            self.outbox.publish(count=len(rows)) as batch,
            Session(self.engine) as session,
            session.begin(),
        ):
            for row in rows:
                attempt, traceparent = row["attempts"], row["traceparent"]
                # only the relay holding the row's current lease may settle it
                mine = (outbox.c.id == row["id"]) & (outbox.c.attempts == attempt)
                try:
                    self.broker.send(row)
                except BrokerError as error:
                    dead = attempt >= self.max_attempts
                    values = {"status": "dead" if dead else "pending", "last_error": repr(error)}
                    if self._settle(session, mine, values):
                        batch.failed(
                            error, traceparent=traceparent, attempt=attempt, dead_letter=dead
                        )
                        continue
                else:
                    if self._settle(session, mine, {"status": "published"}):
                        batch.published(
                            as_utc(row["created_at"]), traceparent=traceparent, attempt=attempt
                        )
                        continue
                # the lease expired and another relay took the row over: not ours to count
                batch.failed("lease_lost", traceparent=traceparent, attempt=attempt)
        return len(rows)

    @staticmethod
    def _settle(session: Session, mine: Any, values: dict[str, Any]) -> bool:
        result = session.execute(update(outbox).where(mine).values(locked_until=None, **values))
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def drain(self) -> None:
        """Publish until nothing is claimable."""
        while self.run_once():
            pass


def outbox_counts(engine: Engine) -> dict[str, int]:
    """Rows per status."""
    with engine.connect() as connection:
        rows = connection.execute(select(outbox.c.status, func.count()).group_by(outbox.c.status))
        return {status: count for status, count in rows}  # noqa: C416 (rows, not pairs)


def setup(url: str) -> tuple[Engine, Outbox]:
    """Create the tables and the instrumented outbox (gauges from the SQLAlchemy probe)."""
    engine = create_engine(url)
    metadata.create_all(engine)
    box = Outbox(
        "todos",
        destination="todo.events",
        system="memory",
        stats=sqlalchemy_probe(engine, "outbox", status="status"),
    )
    return engine, box


def run_demo(
    url: str, pushes: int = 20, report: Callable[[], object] | None = None
) -> dict[str, Any]:
    """Push, publish with a flaky and a poisoned message, and report what happened.

    ``report`` runs after the relay drained the outbox, while the outbox is still observed
    (so an export then includes the depth and oldest-age gauges).
    """
    engine, box = setup(url)
    service = TodoService(engine, box)
    seen: Counter[str] = Counter()

    def flaky(row: dict[str, Any]) -> Exception | None:
        title = json.loads(row["payload"])["title"]
        seen[title] += 1
        if title.startswith("poison"):
            return BrokerError("payload rejected")
        if title.startswith("flaky") and seen[title] == 1:
            return BrokerError("broker busy")
        return None

    broker = Broker(fail=flaky)
    relay = Relay(engine, box, broker, batch_size=8, lease=0.0)
    for index in range(pushes):
        service.push([f"todo {index}", f"flaky {index}" if index % 5 == 0 else f"more {index}"])
    service.push(["poison pill"])
    with contextlib.suppress(ValueError):
        service.push(["never written"], fail=True)
    relay.drain()
    result = {"statuses": outbox_counts(engine), "delivered": len(broker.delivered)}
    if report is not None:
        report()
    box.close()
    engine.dispose()
    return result


class PrintOutboxMetrics(MetricExporter):
    """Prints syncperf's outbox.* metrics (an OTLP exporter would ship them instead)."""

    def __init__(self) -> None:
        super().__init__()

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        for resource in metrics_data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if not metric.name.startswith("outbox."):
                        continue
                    for point in metric.data.data_points:
                        if isinstance(point, HistogramDataPoint):
                            value: object = f"count={point.count} sum={point.sum:.3f}"
                        else:
                            value = getattr(point, "value", None)
                        print(f"{metric.name} {dict(point.attributes or {})} {value}")
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="SQLAlchemy URL (default: a temporary SQLite file)")
    parser.add_argument("--pushes", type=int, default=20)
    args = parser.parse_args(argv)
    syncperf.configure(metric_exporters=[PrintOutboxMetrics()], export_interval=3600)
    with tempfile.TemporaryDirectory() as tmp:
        url = args.url or f"sqlite:///{Path(tmp) / 'outbox.db'}"
        # configure() again at the end: the exporter above gets a last export, then stops
        result = run_demo(url, args.pushes, report=syncperf.configure)
        print(
            f"outbox rows by status: {result['statuses']}; broker deliveries: {result['delivered']}"
        )


if __name__ == "__main__":
    main()

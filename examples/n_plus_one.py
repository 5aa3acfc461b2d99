"""An N+1 in a sync push, caught by ``syncperf.sqlalchemy``, and its batched fix.

A client pushes 50 todos. The first handler looks each one up with ``session.get()``: one
SELECT per item, and, because each lookup autoflushes the todo added in the previous
iteration, one INSERT per item too (101 queries with the COMMIT: two N+1s over one sync
batch). The second loads the batch with one ``IN (...)`` query and lets the ORM write it in
one executemany (3 queries with the COMMIT). syncperf counts queries per sync operation,
reports each N+1 (``sync.db.n_plus_one``, a span event, a warning log naming the statement
and the operation) and leaves the batched push alone.

Run it (SQLite in memory by default; any SQLAlchemy URL with a sync driver works)::

    python examples/n_plus_one.py
    python examples/n_plus_one.py --url postgresql+psycopg://postgres@127.0.0.1/postgres
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
)
from sqlalchemy import Engine, String, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import syncperf
from syncperf.sqlalchemy import instrument_engine

Change = dict[str, Any]


class Base(DeclarativeBase):
    pass


class Todo(Base):
    __tablename__ = "example_todos"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    done: Mapped[bool] = mapped_column(default=False)


def push_one_by_one(session: Session, changes: Sequence[Change]) -> int:
    """The N+1: one SELECT per pushed item."""
    with syncperf.sync_operation("push", entity="todo") as op:
        op.set_batch_size(len(changes))
        for change in changes:
            todo = session.get(Todo, change["id"])  # a query per item
            if todo is None:
                session.add(Todo(**change))
            else:
                todo.title, todo.done = change["title"], change["done"]
        session.commit()
        return op.db_queries  # what syncperf attributed to this push so far


def push_batched(session: Session, changes: Sequence[Change]) -> int:
    """The fix: one SELECT ... WHERE id IN (...) for the whole batch."""
    with syncperf.sync_operation("push", entity="todo") as op:
        op.set_batch_size(len(changes))
        ids = [change["id"] for change in changes]
        known = {t.id: t for t in session.scalars(select(Todo).where(Todo.id.in_(ids)))}
        for change in changes:
            todo = known.get(change["id"])
            if todo is None:
                session.add(Todo(**change))
            else:
                todo.title, todo.done = change["title"], change["done"]
        session.commit()
        return op.db_queries  # what syncperf attributed to this push so far


def run_demo(url: str = "sqlite://", items: int = 50) -> dict[str, int]:
    """Run both pushes against ``url``; return the queries each one made.

    Records into whatever syncperf runtime is current (``configure()`` or ``capture()``).
    """
    engine: Engine = create_engine(url)
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    handle = instrument_engine(engine)  # default: N+1 at 10 executions, slow at 0.5 s
    queries: dict[str, int] = {}
    try:
        first = [{"id": i, "title": f"todo {i}", "done": False} for i in range(items)]
        second = [{"id": i, "title": f"todo {i} (edited)", "done": True} for i in range(items)]
        for name, push, changes in (
            ("one_by_one", push_one_by_one, first),
            ("batched", push_batched, second),
        ):
            with Session(engine) as session:
                queries[name] = push(session, changes)
    finally:
        handle.uninstrument()
        Base.metadata.drop_all(engine)
        engine.dispose()
    return queries


class _Printer(MetricExporter):
    """Prints the sync.db.* metrics syncperf exports (stands in for OTLP or Prometheus)."""

    def __init__(self, out: Callable[[str], None]) -> None:
        super().__init__()
        self._out = out
        self._printed = False

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        if self._printed:  # print once (syncperf flushes again at exit)
            return MetricExportResult.SUCCESS
        self._printed = True
        for resource_metrics in metrics_data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    if not metric.name.startswith("sync.db"):
                        continue
                    for point in metric.data.data_points:
                        attrs = ", ".join(f"{k}={v}" for k, v in sorted(point.attributes.items()))
                        value = getattr(point, "value", None)
                        if value is None:  # a histogram: per-operation values
                            value = (
                                f"{point.count} operations, sum {point.sum:g}, max {point.max:g}"
                            )
                        self._out(f"  {metric.name} {{{attrs}}}: {value}")
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="sqlite://", help="SQLAlchemy URL (sync driver)")
    parser.add_argument("--items", type=int, default=50, help="todos per push")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stdout
    )
    syncperf.configure(metric_exporters=[_Printer(print)], export_interval=3600)
    queries = run_demo(args.url, args.items)
    print(f"push one by one: {queries['one_by_one']} queries for {args.items} items")
    print(f"push batched:    {queries['batched']} queries for {args.items} items")
    print("syncperf metrics:")
    syncperf.force_flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""SQLAlchemy parts of ``syncperf.outbox`` (imported only when used; extra ``[sqlalchemy]``).

* ``SQLAlchemyProbe``: ``SELECT count(*), min(created_at) FROM outbox [WHERE status IN (...)]``,
  one query per collection, with a server-side statement timeout on PostgreSQL.
* ``defer_enqueue``: count an enqueue when the session's transaction commits, forget it when
  the transaction ends otherwise (rollback, close), so rolled-back pushes are never counted.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, column, event, func, select, table
from sqlalchemy.orm import Session, SessionTransaction

from syncperf._config import check_bool, check_float
from syncperf.exceptions import ConfigError
from syncperf.outbox._gauges import OutboxStats, age_of

_PENDING = "syncperf.outbox.pending"
_install_lock = threading.Lock()
_installed = False


class SQLAlchemyProbe:
    """Depth and oldest age of an outbox table, one cheap query per call.

    See ``syncperf.outbox.sqlalchemy_probe`` for the parameters.
    """

    def __init__(
        self,
        engine: Engine,
        table_name: str = "outbox",
        *,
        schema: str | None = None,
        created_at: str = "created_at",
        status: str | None = None,
        pending: Sequence[Any] = ("pending",),
        timeout: float = 1.0,
        totals: bool = False,
        attempts: str | None = None,
    ) -> None:
        if not isinstance(engine, Engine):
            raise ConfigError(
                "engine",
                engine,
                "a synchronous sqlalchemy.Engine (for an AsyncEngine, give the probe a small "
                "sync engine, e.g. create_engine(url, pool_size=1))",
            )
        for option, value in (("table", table_name), ("created_at", created_at)):
            if not isinstance(value, str) or not value:
                raise ConfigError(option, value, "a column or table name")
        if status is not None and (not isinstance(status, str) or not status):
            raise ConfigError("status", status, "a column name or None (every row is pending)")
        if isinstance(pending, (str, bytes)) or not isinstance(pending, Sequence) or not pending:
            raise ConfigError("pending", pending, "a non-empty sequence of status values")
        check_float("timeout", timeout, low=0.0, high=math.inf, open_low=True)
        check_bool("totals", totals)
        if totals and status is None:
            raise ConfigError("totals", totals, "True (with a status column) or False")
        if attempts is not None and (not isinstance(attempts, str) or not attempts or not totals):
            raise ConfigError("attempts", attempts, "a column name (with totals=True) or None")
        columns: list[Any] = [column(created_at)] + ([column(status)] if status else [])
        if attempts:
            columns.append(column(attempts))
        source = table(table_name, *columns, schema=schema)
        if totals:  # one pass over the table: every status, pending ones give depth and age
            assert status is not None
            statement = select(
                source.c[status],
                func.count(),
                func.min(source.c[created_at]),
                func.sum(source.c[attempts]) if attempts else func.count(),
            ).group_by(source.c[status])
        else:
            statement = select(func.count(), func.min(source.c[created_at])).select_from(source)
            if status:
                statement = statement.where(source.c[status].in_(list(pending)))
        self.engine = engine
        self.statement = statement
        self.totals = totals
        self.attempts = attempts is not None
        self.pending = frozenset(pending)
        self.timeout = float(timeout)
        self._postgres = engine.dialect.name == "postgresql"

    def __call__(self) -> OutboxStats:
        """Run the query; return depth and the oldest pending message's age in seconds."""
        with self.engine.connect() as connection:
            if self._postgres:  # the server stops the query; the caller stops waiting
                milliseconds = max(1, int(self.timeout * 1000))
                connection.exec_driver_sql(f"SET LOCAL statement_timeout = {milliseconds}")
            if self.totals:
                groups = connection.execute(self.statement).all()
            else:
                count, oldest = connection.execute(self.statement).one()
            connection.rollback()
        rows: dict[str, int] | None = None
        attempts: int | None = None
        if self.totals:
            count, oldest, rows, attempts = 0, None, {}, 0
            for status, n, first, tries in groups:
                rows[str(status)] = int(n)
                attempts += int(tries or 0)
                if status in self.pending:
                    count += int(n)
                    first = _timestamp(first)
                    oldest = first if oldest is None or first < oldest else oldest
        oldest = _timestamp(oldest)
        return OutboxStats(
            int(count),
            None if oldest is None else age_of(oldest),
            rows,
            attempts if self.attempts else None,
        )

    def __repr__(self) -> str:
        return f"<SQLAlchemyProbe {self.statement}>"


def _timestamp(value: Any) -> Any:
    """SQLite keeps timestamps as ISO text."""
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def defer_enqueue(session: Any, key: object, record: Callable[[int], None], count: int) -> bool:
    """Count ``count`` enqueues with ``record`` when ``session`` commits; False if no Session."""
    sync = getattr(session, "sync_session", session)  # AsyncSession -> its Session
    if not isinstance(sync, Session):
        return False
    _install()
    pending: dict[object, list[Any]] = sync.info.setdefault(_PENDING, {})
    entry = pending.get(key)
    if entry is None:
        pending[key] = [record, count]
    else:
        entry[1] += count
    return True


def _install() -> None:
    global _installed
    if _installed:
        return
    with _install_lock:
        if not _installed:
            event.listen(Session, "after_commit", _after_commit)
            event.listen(Session, "after_transaction_end", _after_transaction_end)
            _installed = True


def _after_commit(session: Session) -> None:
    info = session.info
    if _PENDING not in info:
        return
    pending = info.pop(_PENDING)
    with contextlib.suppress(Exception):  # record() reports its own problems
        for record, count in pending.values():
            record(count)


def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None and _PENDING in session.info:  # rolled back or closed
        session.info.pop(_PENDING, None)

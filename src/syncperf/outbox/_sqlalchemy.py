"""SQLAlchemy parts of ``syncperf.outbox`` (imported only when used; extra ``[sqlalchemy]``).

* ``SQLAlchemyProbe``: ``SELECT count(*), min(created_at) FROM outbox [WHERE status IN (...)]``,
  one query per collection, with a server-side statement timeout on PostgreSQL.
* ``defer_enqueue``: count an enqueue when the session's transaction commits, forget it when
  the transaction ends otherwise (rollback, close), so rolled-back pushes are never counted.
  One made before the session began belongs to the transaction it begins next, unless the
  session is closed first (or reset, or ``expunge_all()``: the same state, see _UNBEGUN).
  A session joined into its connection's transaction commits nothing itself: the count waits
  for that connection's ``COMMIT``.
"""

from __future__ import annotations

import contextlib
import math
import sys
import threading
import weakref
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, column, event, func, select, table
from sqlalchemy.engine import NestedTransaction
from sqlalchemy.ext.asyncio import AsyncSession, async_scoped_session
from sqlalchemy.orm import Session, SessionTransaction, scoped_session
from sqlalchemy.types import NullType

from syncperf._config import MAX_SECONDS, check_bool, check_float
from syncperf._forklocks import renew_in_child
from syncperf._gate import not_quoted
from syncperf.exceptions import ConfigError
from syncperf.outbox._gauges import OutboxStats, age_of

NULL_STATUS = "_null"
"""``outbox.status`` of the rows whose status is NULL (``totals=True``)."""
_PENDING = "syncperf.outbox.pending"
_UNBEGUN = "syncperf.outbox.unbegun"
"""The identity map the session had at an enqueue made before it began: ``close()`` and
``reset()`` replace it, and no transaction event tells of them when none began. So does
``expunge_all()``, which is all ``close()`` does then (nothing else tells them apart), and
which drops the rows ``add()`` gave the session as ``close()`` does: it forgets too."""
_install_lock = threading.Lock()
renew_in_child(sys.modules[__name__], "_install_lock")  # taken by the first enqueue(session)
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
        _check_engine(engine)
        for option, value in (("table", table_name), ("created_at", created_at)):
            if not isinstance(value, str) or not value:
                raise ConfigError(option, not_quoted(value), "a column or table name")
        if status is not None and (not isinstance(status, str) or not status):
            raise ConfigError("status", not_quoted(status), "a column name or None")
        if isinstance(pending, (str, bytes)) or not isinstance(pending, Sequence) or not pending:
            raise ConfigError("pending", not_quoted(pending), "a non-empty sequence of values")
        timeout = check_float("timeout", timeout, low=0.0, high=MAX_SECONDS, open_low=True)
        check_bool("totals", totals)
        if totals and status is None:
            raise ConfigError("totals", totals, "True (with a status column) or False")
        if attempts is not None and (not isinstance(attempts, str) or not attempts or not totals):
            raise ConfigError("attempts", not_quoted(attempts), "a column (totals=True) or None")
        columns: list[Any] = [column(created_at)] + ([column(status)] if status else [])
        if attempts:
            columns.append(column(attempts))
        source = table(table_name, *columns, schema=schema)
        # Untyped binds: the server gives them the column's type. Typed ones (VARCHAR, as
        # psycopg casts a string) fail against an enum column (no enum = varchar operator).
        values = [bindparam(None, value, type_=NullType()) for value in pending]
        if totals:  # one pass over the table: every status, pending ones give depth and age
            assert status is not None
            statement = select(
                source.c[status],
                source.c[status].in_(values),  # in SQL: char(n) values come back padded
                func.count(),
                func.min(source.c[created_at]),
                func.sum(source.c[attempts]) if attempts else func.count(),
            ).group_by(source.c[status])
        else:
            statement = select(func.count(), func.min(source.c[created_at])).select_from(source)
            if status:
                statement = statement.where(source.c[status].in_(values))
        self.engine = engine
        self.statement = statement
        self.totals = totals
        self.attempts = attempts is not None
        self.pending = frozenset(pending)
        self.timeout = float(timeout)
        self._postgres = engine.dialect.name == "postgresql"

    def __call__(self) -> OutboxStats:
        """Run the query; return depth and the oldest pending message's age in seconds.

        On PostgreSQL the statement timeout is set for the query's transaction only. A
        connection in autocommit mode has none (``SET LOCAL`` would end with its own
        statement): it gets an explicit ``BEGIN`` and ``ROLLBACK``, as the plan worker's
        (``sqlalchemy._plans``); if the ``ROLLBACK`` fails, the connection is invalidated
        rather than handed back to the pool inside a transaction.
        """
        with self.engine.connect() as connection:
            explicit = self._postgres and _autocommit(connection)
            if explicit:
                connection.exec_driver_sql("BEGIN")
            try:
                if self._postgres:  # the server stops the query; the caller stops waiting
                    milliseconds = max(1, int(self.timeout * 1000))
                    connection.exec_driver_sql(f"SET LOCAL statement_timeout = {milliseconds}")
                if self.totals:
                    groups = connection.execute(self.statement).all()
                else:
                    count, oldest = connection.execute(self.statement).one()
            finally:
                if explicit:
                    _end(connection)
            connection.rollback()
        rows: dict[str, int] | None = None
        attempts: int | None = None
        if self.totals:
            count, oldest, rows, attempts = 0, None, {}, 0
            for status, pending, n, first, tries in groups:
                label = _label(status)
                rows[label] = rows.get(label, 0) + int(n)
                attempts += _attempt_sum(tries)
                if pending:
                    count += int(n)
                    first = _timestamp(first)
                    if first is not None and (oldest is None or first < oldest):
                        oldest = first
        oldest = _timestamp(oldest)
        return OutboxStats(
            int(count),
            None if oldest is None else age_of(oldest),
            rows,
            attempts if self.attempts else None,
        )

    def __repr__(self) -> str:
        return f"<SQLAlchemyProbe {self.statement}>"


def _check_engine(engine: Any) -> None:
    """Raise ``ConfigError`` unless ``engine`` is a synchronous ``Engine``: not an
    ``AsyncEngine``, nor its ``sync_engine`` (every collection would fail, MissingGreenlet)."""
    if not isinstance(engine, Engine):
        raise ConfigError(
            "engine",
            not_quoted(engine),  # a URL given by mistake; an engine's repr shows its URL's query
            "a synchronous sqlalchemy.Engine (for an AsyncEngine, give the probe a small "
            "sync engine, e.g. create_engine(url, pool_size=1))",
        )
    if getattr(engine.dialect, "is_async", False):  # an AsyncEngine's sync_engine
        raise ConfigError(
            "engine",
            not_quoted(engine),  # a URL given by mistake; an engine's repr shows its URL's query
            "a synchronous sqlalchemy.Engine, not the sync_engine of an AsyncEngine (its "
            f"{engine.dialect.driver} connections need the event loop; give the probe a "
            "small sync engine, e.g. create_engine(url, pool_size=1))",
        )


def _attempt_sum(tries: Any) -> int:
    """A status's ``sum(attempts)`` as an ``int``: 0 for NULL (no counter set), an ``int``, or
    a ``Decimal`` or ``float`` of whole value (PostgreSQL's sum of a ``bigint`` or ``numeric``,
    SQLite's of a ``REAL``).

    Raises:
        TypeError: anything else (``2.7`` attempts is no count): the probe fails.
    """
    if tries is None:
        return 0
    if type(tries) is int:
        return tries
    if type(tries) is Decimal and tries.is_finite() and tries == tries.to_integral_value():
        return int(tries)
    if type(tries) is float and math.isfinite(tries) and tries.is_integer():
        return int(tries)
    raise TypeError(f"the attempts column's sum must be a whole number, not {type(tries).__name__}")


def _autocommit(connection: Connection) -> bool:
    """Whether the connection's driver runs each statement in its own transaction."""
    return getattr(connection.connection.dbapi_connection, "autocommit", False) is True


def _end(connection: Connection) -> None:
    """``ROLLBACK`` the explicit transaction of an autocommit connection, or invalidate it."""
    try:
        connection.exec_driver_sql("ROLLBACK")
    except BaseException:
        connection.invalidate()
        raise


def _label(status: Any) -> str:
    """A status as an ``outbox.status`` value: NULL is ``_null``; a ``char(n)`` value loses
    its padding."""
    return NULL_STATUS if status is None else str(status).rstrip(" ")


def _timestamp(value: Any) -> Any:
    """SQLite keeps timestamps as ISO text."""
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def defer_enqueue(session: Any, key: object, record: Callable[[int], None], count: int) -> bool:
    """Count ``count`` enqueues with ``record`` when ``session`` commits; False if ``session``
    stands for no Session (see ``_session_of``).

    The count belongs to the innermost transaction open now (a savepoint included): a savepoint
    that rolls back forgets it, one that is released hands it to its parent, and it is recorded
    only when the outermost transaction commits. Before any transaction began it belongs to the
    outermost one to come, unless the session is closed (or reset) before it begins.
    """
    sync = _session_of(session)
    if sync is None:
        return False
    _install()
    owner = sync.get_nested_transaction() or sync.get_transaction()
    pending = _pending(sync)
    if owner is None:
        if sync.info.get(_UNBEGUN) is not sync.identity_map:  # closed since the last one
            pending.pop(None, None)
        sync.info[_UNBEGUN] = sync.identity_map
    _add(pending.setdefault(owner, {}), {key: [record, count]})
    return True


def _session_of(value: object) -> Session | None:
    """The ``Session`` that ``value`` stands for, or None.

    An ``AsyncSession`` stands for its sync session; a ``scoped_session`` or
    ``async_scoped_session`` (the registry proxy, Flask-SQLAlchemy's ``db.session``) for the
    session current in its scope, as any method called on the proxy would. Only the exact
    type is looked at (``type()``, not ``__class__``): nothing of an unknown object is read.
    """
    try:
        if issubclass(type(value), (scoped_session, async_scoped_session)):
            value = value.registry()  # type: ignore[attr-defined]
        if issubclass(type(value), AsyncSession):
            value = value.sync_session  # type: ignore[attr-defined]
    except Exception:  # a scope function that failed
        return None
    return value if issubclass(type(value), Session) else None  # type: ignore[return-value]


_Counts = dict[object, list[Any]]
"""``[record, count]`` by outbox."""


def _pending(session: Session) -> dict[SessionTransaction | None, _Counts]:
    """The session's pending counts by owning transaction (None: the outermost, not begun)."""
    return session.info.setdefault(_PENDING, {})  # type: ignore[no-any-return]


def _add(into: _Counts, counts: _Counts) -> None:
    for key, (record, count) in counts.items():
        entry = into.get(key)
        if entry is None:
            into[key] = [record, count]
        else:
            entry[1] += count


def _install() -> None:
    global _installed
    if _installed:
        return
    with _install_lock:
        if not _installed:
            event.listen(Session, "after_transaction_create", _after_transaction_create)
            event.listen(Session, "after_commit", _after_commit)
            event.listen(Session, "after_transaction_end", _after_transaction_end)
            _installed = True


def _after_transaction_create(session: Session, transaction: SessionTransaction) -> None:
    """The outermost transaction begins (explicitly, or on first use, ``commit()`` included):
    it takes the enqueues made before, unless the session was closed since (see _UNBEGUN)."""
    pending = session.info.get(_PENDING)
    if transaction.parent is not None or not pending or None not in pending:
        return
    unbegun = pending.pop(None)
    if session.info.pop(_UNBEGUN, None) is session.identity_map:
        _add(pending.setdefault(transaction, {}), unbegun)


def _after_commit(session: Session) -> None:
    """A transaction committed: the outermost records its counts, a released savepoint hands
    them to the transaction it was opened in.

    ``after_commit`` fires for a savepoint's release too, before the savepoint is closed, so
    the committing transaction is still the innermost savepoint (or, with none, the outermost).
    """
    pending = session.info.get(_PENDING)
    if not pending:
        return
    committed = session.get_nested_transaction() or session.get_transaction()
    if committed is None:  # pragma: no cover - SQLAlchemy always has one here
        return
    counts = pending.pop(committed, None)
    parent = _owner(committed.parent)
    if parent is not None:
        if counts:
            _add(pending.setdefault(parent, {}), counts)
        return
    if counts and not _joined(committed, counts):
        _record(counts)


def _record(counts: _Counts) -> None:
    with contextlib.suppress(Exception):  # record() reports its own problems
        for record, count in counts.values():
            record(count)


def _joined(committed: SessionTransaction, counts: _Counts) -> bool:
    """Whether the session's commit committed nothing: it was joined into a transaction of
    its connection's that it does not control (``Session(bind=connection)`` inside
    ``connection.begin()``, SQLAlchemy's pattern for tests), or made a savepoint inside one.
    The counts then wait for that connection's own ``COMMIT`` (``_Joined``)."""
    for connection, transaction, commits, _ in set(committed._connections.values()):
        if not commits or isinstance(transaction, NestedTransaction):
            _Joined.of(connection).add(connection, counts)
            return True
    return False


class _Joined:
    """Counts a connection's transaction holds for sessions joined into it: recorded at its
    ``COMMIT``, forgotten at its ``ROLLBACK`` or at the rollback of a savepoint that was open
    when the session committed (the session's rows were inside it)."""

    def __init__(self) -> None:
        self.held: list[tuple[_Counts, frozenset[str]]] = []

    @classmethod
    def of(cls, connection: Connection) -> _Joined:
        joined = _JOINED.get(connection)
        if joined is None:  # the events of this Connection object only, for its life
            joined = _JOINED[connection] = cls()
            event.listen(connection, "commit", joined.commit)
            event.listen(connection, "rollback", joined.rollback)
            event.listen(connection, "rollback_savepoint", joined.rollback_savepoint)
        return joined

    def add(self, connection: Connection, counts: _Counts) -> None:
        savepoints: set[str] = set()
        nested = connection.get_nested_transaction()
        while nested is not None:
            savepoints.add(nested._savepoint)
            nested = nested._previous_nested
        self.held.append((counts, frozenset(savepoints)))

    def commit(self, connection: Connection) -> None:
        held, self.held = self.held, []
        for counts, _ in held:
            _record(counts)

    def rollback(self, connection: Connection) -> None:
        self.held = []

    def rollback_savepoint(self, connection: Connection, name: str, context: Any) -> None:
        self.held = [entry for entry in self.held if name not in entry[1]]


_JOINED: weakref.WeakKeyDictionary[Connection, _Joined] = weakref.WeakKeyDictionary()


def _owner(transaction: SessionTransaction | None) -> SessionTransaction | None:
    """The nearest savepoint or outermost transaction at or above ``transaction`` (the ORM's
    own subtransactions, e.g. a flush's, neither commit nor roll back anything)."""
    while transaction is not None and not transaction.nested and transaction.parent is not None:
        transaction = transaction.parent
    return transaction


def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    """A transaction ended: what it still holds was not committed (rolled back or closed)."""
    pending = session.info.get(_PENDING)
    if pending is None:
        return
    if transaction.parent is None:  # the outermost: nothing pending survives it
        session.info.pop(_PENDING, None)
    else:
        pending.pop(transaction, None)

"""Transaction ends recorded as queries: ``COMMIT``, ``ROLLBACK`` and two-phase commit's steps.

The driver's ``commit()`` / ``rollback()`` (the dialect's ``do_commit`` / ``do_rollback``) and,
on psycopg 2 and 3, its ``tpc_prepare()`` / ``tpc_commit()`` / ``tpc_rollback()`` (the dialect's
``do_prepare_twophase`` / ``do_commit_twophase`` / ``do_rollback_twophase``) send a statement
without passing through ``do_execute``. ``QueryRecorder.install`` wraps them with ``wrap_end``,
which records the statement the database runs (its time and its failure: a deferred constraint
fails the ``COMMIT`` or the ``PREPARE TRANSACTION``) through the recorder's query path. Other
dialects run two-phase steps as statements (``PREPARE TRANSACTION 'x'``, ``XA PREPARE``), which
``do_execute`` measures already: their methods are left alone, or each would count twice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from syncperf import _runtime

__all__ = ["FAILED", "NAMES", "ends", "wrap_end"]

FAILED = "sqlalchemy_hook_failed"
"""The ``syncperf.dropped`` reason of a failure of syncperf's own dialect wrappers."""
_ENDS = (("do_commit", "COMMIT"), ("do_rollback", "ROLLBACK"))
_TWO_PHASE = (
    ("do_prepare_twophase", "PREPARE TRANSACTION"),
    ("do_commit_twophase", "COMMIT"),
    ("do_rollback_twophase", "ROLLBACK"),
)
NAMES = tuple(name for name, _ in (*_ENDS, *_TWO_PHASE))
"""Every dialect method ``wrap_end`` may wrap."""
_PSYCOPG = "sqlalchemy.dialects.postgresql._psycopg_common"
"""Where SQLAlchemy's psycopg 2 and 3 dialects implement two-phase commit with ``tpc_*``."""

Wrap = Callable[[Callable[..., Any], bool], Callable[..., Any]]
"""``QueryRecorder._wrap``: a method made into a recorded query execution."""


def ends(dialect: Any) -> list[tuple[str, str]]:
    """The methods of ``dialect`` that end a transaction past ``do_execute``, each with the
    statement it sends: ``do_commit`` and ``do_rollback`` always, the two-phase ones where
    psycopg's implementation (the driver's ``tpc_*`` calls) is the one in use."""
    found = list(_ENDS)
    for name, statement in _TWO_PHASE:
        owner = next((cls for cls in type(dialect).__mro__ if name in vars(cls)), None)
        if owner is not None and owner.__module__ == _PSYCOPG:
            found.append((name, statement))
    return found


def wrap_end(wrap: Wrap, original: Callable[..., Any], name: str, statement: str) -> Any:
    """The wrapper of the transaction end ``name`` of a dialect, recording ``statement``.

    Once per transaction, never per query. A ``COMMIT`` or ``ROLLBACK`` the driver does not
    send (no transaction open: e.g. the pool's reset of a connection whose transaction ended
    already, or a two-phase transaction ended before it was prepared) is not recorded; a
    prepared one ends with ``COMMIT PREPARED`` / ``ROLLBACK PREPARED``.
    """

    def run(_connection: Any, _statement: str, call: Any, _context: Any) -> Any:
        args, kwargs = call
        return original(*args, **kwargs)

    record = wrap(run, True)

    def end(connection: Any) -> Any:
        if _sends_nothing(connection):
            return original(connection)
        return record(connection, statement, ((connection,), {}), None)

    def prepare(connection: Any, *args: Any, **kwargs: Any) -> Any:
        return record(connection, statement, ((connection, *args), kwargs), None)

    def finish(connection: Any, xid: Any, is_prepared: bool = True, recover: bool = False) -> Any:
        call: tuple[tuple[Any, ...], dict[str, Any]]
        call = ((connection, xid, is_prepared, recover), {})
        sent = _finishing(connection, statement, is_prepared or recover)
        if sent is None:
            return original(*call[0])
        return record(connection, sent, call, None)

    if name == "do_prepare_twophase":
        return prepare
    return end if name in ("do_commit", "do_rollback") else finish


def _sends_nothing(connection: Any) -> bool:
    """Whether the driver of the pool's ``connection`` knows no transaction is open (see
    ``_idle``); a failure to tell is counted, and the end is then not measured."""
    try:
        return _idle(connection)
    except Exception as failure:  # not measured, never failed by syncperf
        _hook_failed(failure)
        return True


def _finishing(connection: Any, statement: str, prepared: bool) -> str | None:
    """What the end of a two-phase transaction on SQLAlchemy's ``connection`` sends:
    ``statement`` followed by ``PREPARED`` once prepared (psycopg 3 marks the transaction
    prepared before it sends ``PREPARE TRANSACTION``, so after one that failed too), else
    ``statement``, or None when no transaction is open (nothing is sent)."""
    if prepared:
        return statement + " PREPARED"
    try:
        pooled = connection.connection
        tpc = getattr(pooled.driver_connection, "_tpc", None)  # psycopg 3: (xid, prepared)
        if isinstance(tpc, tuple) and tpc[1:] == (True,):
            return statement + " PREPARED"
        return None if _idle(pooled) else statement
    except Exception as failure:  # not measured, never failed by syncperf
        _hook_failed(failure)
        return None


def _hook_failed(failure: Exception) -> None:
    (_runtime.installed or _runtime.current()).internal_error(FAILED, failure)


def _idle(connection: Any) -> bool:
    """Whether the driver knows no transaction is open: its ``commit()`` / ``rollback()`` then
    sends nothing. psycopg 2 and 3 say so (``info.transaction_status``, 0 when idle), as do
    sqlite3 and aiosqlite (``in_transaction``) and asyncpg (``is_in_transaction()``). Any other
    driver is taken at its word: MySQL's send ``COMMIT`` / ``ROLLBACK`` whatever the state."""
    driver = getattr(connection, "driver_connection", None)  # under SQLAlchemy's adapter
    if driver is None:  # a raw DBAPI connection, or a detached one
        driver = getattr(connection, "dbapi_connection", connection)
    status = getattr(getattr(driver, "info", None), "transaction_status", None)
    if isinstance(status, int):
        return status == 0
    in_transaction = getattr(driver, "in_transaction", None)
    if isinstance(in_transaction, bool):
        return not in_transaction
    asyncpg = getattr(driver, "is_in_transaction", None)
    return callable(asyncpg) and asyncpg() is False

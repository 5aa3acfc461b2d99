"""What syncperf may say about an exception: its type, and never the data in its message.

An exception's message is whatever its raiser put there: a handler's ``ValueError`` may quote
a pushed record, SQLAlchemy appends ``[SQL: ...]`` with inlined literals and
``[parameters: (...)]`` with the bound values, PostgreSQL adds ``DETAIL: Key (email)=(...)``,
and Python's own messages echo values (``invalid literal for int() with base 10: '...'``).
No pattern can tell data from prose in arbitrary text, so by default nothing of a message is
exported on a span. What is:

* ``exception.type``, the fully qualified class name (``error.type``, ``_OTHER`` for a class
  whose name cannot be read);
* for a database error, a message built only from what the driver reports in separate
  fields: the SQLSTATE (or SQLite's error name), the schema, table, column and constraint
  names of an integrity violation PostgreSQL's own constraint checks raised (SQLSTATE class
  23 and a server source file of ``_CONSTRAINT_SOURCES``: a PL/pgSQL ``RAISE ... USING
  ERRCODE = '23505', COLUMN = ...`` puts anything there, data included), each only if it is
  an unquoted SQL identifier (``[A-Za-z_][A-Za-z0-9_$]*``, at most 63 bytes), and the
  statement sanitized like ``db.query.text``;
* ``exception.stacktrace``: the frames (file, line, function, source line) of the exception
  and of its causes, each exception shown by the above instead of its message; at most
  ``MAX_FRAMES`` frames in all, the outermost (an exception instance raised over and over
  keeps every raise's frames: its traceback grows without bound), a cut traceback saying so;
* ``db.response.status_code``, the SQLSTATE, as the semantic conventions name it.

``record_exception_messages=True`` (``SYNCPERF_RECORD_EXCEPTION_MESSAGES=true``) restores the
OpenTelemetry SDK's behaviour: ``str(exc)`` and the traceback with every message, data
included (cut to ``MAX_FRAMES`` frames the same way).
"""

from __future__ import annotations

import re
from typing import Any

from opentelemetry.trace import Span

from syncperf._gate import error_type, exception_event, stack_trace

__all__ = ["exception_attributes", "record_exception", "status_code", "summary"]

_SQLSTATE = re.compile(r"[0-9A-Z]{5}")
_SQLITE_NAME = re.compile(r"SQLITE_[A-Z_]{1,60}")
_NAME_FIELDS = ("schema_name", "table_name", "column_name", "constraint_name")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,62}")
"""A name as PostgreSQL writes an unquoted identifier (at most 63 bytes, ASCII)."""
_CONSTRAINT_SOURCES = frozenset(
    {
        "nbtinsert.c",  # unique, primary key
        "execMain.c",  # not null, check, partition
        "execIndexing.c",  # exclusion
        "execExprInterp.c",  # domain
        "ri_triggers.c",  # foreign key
        "tablecmds.c",  # ALTER TABLE validating a check
        "constraint.c",  # deferred unique
        "execReplication.c",  # logical replication
    }
)
"""The PostgreSQL server files whose constraint checks raise integrity violations (SQLSTATE
class 23) with the names of what was violated: a PL/pgSQL ``RAISE`` (``pl_exec.c``) may pick
a class 23 code and put anything in those fields."""
_MYSQL_DRIVERS = ("pymysql", "MySQLdb", "mysql", "asyncmy", "aiomysql", "mariadb", "cymysql")
_DIALECTS = {"sqlite3": "sqlite", **dict.fromkeys(_MYSQL_DRIVERS, "mysql")}
"""How the statement of a driver's error is lexed, by the top-level module of the driver's
error class (SQLAlchemy's MySQL and MariaDB drivers); any other is lexed as PostgreSQL."""


def record_exception(span: Span, exc: BaseException, full: bool) -> None:
    """Add the ``exception`` event of ``exc`` to ``span``, redacted unless ``full``."""
    if full:
        try:
            attrs = exception_event(exc)
        except Exception:  # its ``__str__`` or ``__class__`` raises: the redacted event
            pass
        else:
            span.add_event("exception", attrs)
            return
    span.add_event("exception", exception_attributes(exc))


def exception_attributes(exc: BaseException) -> dict[str, str]:
    """The redacted attributes of an ``exception`` event (see the module's docstring)."""
    attrs = {"exception.type": error_type(exc)}
    try:
        message = _database_message(exc)
        if message:
            attrs["exception.message"] = message
        attrs["exception.stacktrace"] = _stacktrace(exc)
        code = status_code(exc)
        if code is not None:
            attrs["db.response.status_code"] = code
    except Exception:  # a hostile exception object: its type is all there is to say
        pass
    attrs["exception.escaped"] = "False"
    return attrs


def summary(exc: BaseException) -> str:
    """One line about ``exc``: its type, and for a database error the driver's safe details."""
    try:
        message = _database_message(exc)
    except Exception:  # a hostile exception object
        message = None
    name = error_type(exc)
    return f"{name}: {message}" if message else name


def status_code(exc: BaseException) -> str | None:
    """``db.response.status_code`` of a database error: the SQLSTATE (PostgreSQL, through
    psycopg, psycopg2, asyncpg or SQLAlchemy) or SQLite's error name; None otherwise."""
    try:
        for candidate in _database_errors(exc):
            for field in ("sqlstate", "pgcode"):
                code = getattr(candidate, field, None)
                if type(code) is str and _SQLSTATE.fullmatch(code):
                    return code
            name = getattr(candidate, "sqlite_errorname", None)
            if type(name) is str and _SQLITE_NAME.fullmatch(name):
                return name
    except Exception:  # a hostile exception object
        pass
    return None


def _database_errors(exc: BaseException) -> list[Any]:
    """``exc``, the DBAPI error SQLAlchemy wrapped (``orig``) and the driver's own error an
    adapter translated (asyncpg's, as ``orig.__cause__``)."""
    found: list[Any] = [exc]
    orig = getattr(exc, "orig", None)
    if isinstance(orig, BaseException):
        found.append(orig)
        if isinstance(orig.__cause__, BaseException):
            found.append(orig.__cause__)
    return found


def _database_message(exc: BaseException) -> str | None:
    """The safe message of a database error, from the driver's separate fields only."""
    errors = _database_errors(exc)
    code = status_code(exc)
    statement = getattr(exc, "statement", None) if len(errors) > 1 else None
    if code is None and type(statement) is not str:
        return None
    parts: list[str] = []
    if len(errors) > 1:
        parts.append(f"({error_type(errors[1])})")
    if code is not None:
        parts.append(f"{'SQLSTATE' if _SQLSTATE.fullmatch(code) else 'code'} {code}")
    for field in _NAME_FIELDS if _names_reported(errors, code) else ():
        name = _field(errors, field)
        if name is not None:
            parts.append(f"{field.replace('_name', '')} {name}")
    if type(statement) is str:
        from syncperf._sql import normalize  # compiling its lexer takes milliseconds

        module = type(errors[-1]).__module__.partition(".")[0]
        text = normalize(statement, dialect=_DIALECTS.get(module, "postgresql"))
        parts.append(f"[SQL: {text}]")
    return " ".join(parts)


def _names_reported(errors: list[Any], code: str | None) -> bool:
    """Whether the name fields hold names: an integrity violation (SQLSTATE class 23) that
    the server's own constraint checks raised (the source file the driver reports: psycopg's
    and psycopg2's ``diag.source_file``, asyncpg's ``server_source_filename``)."""
    if code is None or not code.startswith("23"):
        return False
    for error in errors:
        diag = getattr(error, "diag", None)
        for source in (
            getattr(diag, "source_file", None),
            getattr(error, "server_source_filename", None),
        ):
            if type(source) is str:
                return source in _CONSTRAINT_SOURCES
    return False


def _field(errors: list[Any], field: str) -> str | None:
    """A schema name the driver reports (psycopg's ``diag``, asyncpg's attributes), if it
    looks like an unquoted SQL identifier."""
    for error in errors:
        for holder in (getattr(error, "diag", None), error):
            value = getattr(holder, field, None) if holder is not None else None
            if type(value) is str and _IDENTIFIER.fullmatch(value):
                return value
    return None


def _stacktrace(exc: BaseException) -> str:
    """The traceback of ``exc`` and its causes, each exception described, never quoted, cut
    to ``MAX_FRAMES`` frames (see ``_gate.stack_trace``)."""
    return stack_trace(exc, lambda e: summary(e) + "\n")

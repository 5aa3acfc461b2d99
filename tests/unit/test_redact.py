"""Exceptions on spans and in log lines: the type and the frames, never the data."""

from __future__ import annotations

import logging
import re
import sqlite3
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

import syncperf
from syncperf import Config
from syncperf._redact import exception_attributes, status_code, summary
from syncperf.outbox import Outbox
from syncperf.testing import Capture, capture

EMAIL = "alice@example.com"
PASSWORD = "Hunter2-redact-7d1f"
TOKEN = "sk_live_redact_51Hx9a"
SECRETS = (EMAIL, PASSWORD, TOKEN, "Hunter2", "sk_live")


@pytest.fixture
def engine() -> Iterator[sa.Engine]:
    eng = sa.create_engine("sqlite://")
    with eng.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE account (id INTEGER PRIMARY KEY, email TEXT UNIQUE)")
        conn.exec_driver_sql(f"INSERT INTO account (id, email) VALUES (1, '{EMAIL}')")
    yield eng
    eng.dispose()


def _insert_duplicate(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO account (id, email) VALUES (:id, :email)"),
            {"id": 2, "email": EMAIL},
        )


def _event(cap: Capture, name: str = "sync push") -> dict[str, Any]:
    (span,) = [s for s in cap.spans() if s.name == name]
    (event,) = [e for e in span.events if e.name == "exception"]
    return dict(event.attributes or {})


def _assert_clean(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


@pytest.mark.skipif(sys.version_info < (3, 11), reason="sqlite3 errors carry their code from 3.11")
def test_a_database_error_on_a_sync_span_keeps_its_type_code_and_sanitized_sql_only(
    syncperf_capture: Capture, engine: sa.Engine
) -> None:
    with pytest.raises(sa.exc.IntegrityError) as raised, syncperf.sync_operation("push"):
        _insert_duplicate(engine)
    assert EMAIL in str(raised.value)  # SQLAlchemy's message quotes the parameters

    event = _event(syncperf_capture)
    _assert_clean(repr(event))
    assert event["exception.type"] == "sqlalchemy.exc.IntegrityError"
    assert event["db.response.status_code"] == "SQLITE_CONSTRAINT_UNIQUE"
    assert event["exception.message"] == (
        "(sqlite3.IntegrityError) code SQLITE_CONSTRAINT_UNIQUE "
        "[SQL: INSERT INTO account (id, email) VALUES (?)]"
    )
    stack = event["exception.stacktrace"]
    assert "in _insert_duplicate" in stack  # the frames are kept
    assert "sqlite3.IntegrityError: code SQLITE_CONSTRAINT_UNIQUE" in stack  # the cause
    assert "The above exception was the direct cause" in stack


def test_a_handler_exception_keeps_its_type_and_frames_not_its_message(
    syncperf_capture: Capture,
) -> None:
    def handler(body: dict[str, str]) -> None:
        try:
            int(body["password"])
        except ValueError as error:
            raise RuntimeError(f"bad push from {body['email']} with {body['token']}") from error

    with pytest.raises(RuntimeError), syncperf.sync_operation("push"):
        handler({"email": EMAIL, "password": PASSWORD, "token": TOKEN})

    event = _event(syncperf_capture)
    _assert_clean(repr(event))
    assert event["exception.type"] == "RuntimeError"
    assert "exception.message" not in event
    stack = event["exception.stacktrace"]
    assert stack.endswith("RuntimeError\n")
    assert "\nValueError\n" in stack
    assert "in handler" in stack


def test_rescued_spans_are_redacted_too() -> None:
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    with capture(sampler=ALWAYS_OFF) as cap:
        with pytest.raises(KeyError), syncperf.sync_operation("pull"):
            raise KeyError(TOKEN)
        event = _event(cap, "sync pull")
    _assert_clean(repr(event))
    assert event["exception.type"] == "KeyError"


def test_record_exception_messages_opts_in_to_the_sdk_behaviour() -> None:
    with capture(record_exception_messages=True) as cap:
        with pytest.raises(ValueError), syncperf.sync_operation("push"):
            raise ValueError(f"token {TOKEN}")
        event = _event(cap)
    assert event["exception.message"] == f"token {TOKEN}"
    assert f"ValueError: token {TOKEN}" in event["exception.stacktrace"]


class _BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class _BadClass(Exception):
    @property  # type: ignore[misc]
    def __class__(self) -> type:  # type: ignore[override]
        raise RuntimeError("no class")


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("hostile", [_BadStr, _BadClass])
def test_the_opt_in_keeps_the_error_span_of_an_exception_that_cannot_be_read(
    hostile: type[Exception], strict: bool
) -> None:
    with capture(record_exception_messages=True, strict=strict) as cap:
        exc = hostile()

        @syncperf.instrument_sync("push")
        def push() -> None:
            raise exc

        with pytest.raises(hostile) as raised:
            push()
        assert raised.value is exc  # the user's exception, never syncperf's
        event = _event(cap)
        assert cap.total("syncperf.dropped") == 0
    assert event["exception.type"].endswith(hostile.__qualname__)
    assert "exception.message" not in event  # redacted: nothing else could be read


def test_the_opt_in_is_read_from_the_environment() -> None:
    env = {"SYNCPERF_RECORD_EXCEPTION_MESSAGES": "true"}
    assert Config.from_env(env).record_exception_messages is True
    assert Config.from_env({}).record_exception_messages is False
    with pytest.raises(syncperf.ConfigError, match="record_exception_messages"):
        Config(record_exception_messages="yes")  # type: ignore[arg-type]


def test_outbox_batch_spans_are_redacted(syncperf_capture: Capture) -> None:
    outbox = Outbox("mail")
    with pytest.raises(ConnectionError), outbox.publish(count=1):
        raise ConnectionError(f"smtp refused {EMAIL}")
    event = _event(syncperf_capture, "send mail")
    _assert_clean(repr(event))
    assert event["exception.type"] == "ConnectionError"


def test_internal_error_log_lines_name_the_type_only(caplog: pytest.LogCaptureFixture) -> None:
    with capture(strict=False) as cap, caplog.at_level(logging.WARNING, "syncperf"):
        cap.runtime.internal_error("span_end_failed", ValueError(f"boom {TOKEN}"))
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("syncperf hook failed (span_end_failed): builtins.ValueError")
    assert TOKEN not in line


def test_hostile_exceptions_are_described_by_type() -> None:
    class Hostile(Exception):
        def __getattr__(self, name: str) -> Any:
            raise RuntimeError("no")

        def __str__(self) -> str:
            raise RuntimeError("no")

    error = Hostile()
    assert summary(error).endswith("Hostile")
    attrs = exception_attributes(error)
    assert attrs["exception.type"].endswith("Hostile")
    assert status_code(error) is None


_SECRET = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=30
).map(lambda s: "zq" + s)


@settings(max_examples=200, deadline=None)
@given(secret=_SECRET, code=st.sampled_from(["23505", "22P02", None]))
def test_no_message_parameter_or_literal_of_a_database_error_is_exported(
    secret: str, code: str | None
) -> None:
    quoted = secret.replace("'", "''")
    orig = sqlite3.IntegrityError(f"duplicate key: Key (email)=({secret}) already exists")
    if code is not None:
        orig.sqlstate = code  # type: ignore[attr-defined]  # as psycopg and asyncpg report it
    error = sa.exc.IntegrityError(
        f"INSERT INTO account (email, note) VALUES (:email, '{quoted}')",
        {"email": secret},
        orig,
    )
    try:
        raise error from orig
    except sa.exc.IntegrityError as raised:
        attrs = exception_attributes(raised)
        line = summary(raised)
    exported = repr(attrs) + line
    assert "zq" not in exported
    assert "[SQL: INSERT INTO account (email, note) VALUES (?)]" in attrs["exception.message"]
    assert attrs.get("db.response.status_code") == code


_NAME_SECRET = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF).filter(str.isprintable),
    min_size=1,
    max_size=30,
).map(lambda s: "zq" + s)
"""Printable strings that fit a name field (a PL/pgSQL ``RAISE ... USING SCHEMA = ...``)."""


class _Diag:
    def __init__(self, name: str, source: str | None = None) -> None:
        self.schema_name = self.table_name = self.column_name = self.constraint_name = name
        self.source_file = source  # the server's source file that raised it


@settings(max_examples=200, deadline=None)
@given(name=_NAME_SECRET, code=st.sampled_from(["P0001", "22023", "42501", "XX000", None]))
def test_name_fields_are_exported_only_from_an_integrity_error(name: str, code: str | None) -> None:
    # RAISE EXCEPTION USING SCHEMA (TABLE, COLUMN, CONSTRAINT) = <any string> fills the
    # fields PostgreSQL reserves for the names of an integrity violation
    orig = sqlite3.DatabaseError("raised")
    orig.diag = _Diag(name, "nbtinsert.c")  # type: ignore[attr-defined]  # psycopg's
    if code is not None:
        orig.sqlstate = code  # type: ignore[attr-defined]
    error = sa.exc.DBAPIError("SELECT 1", None, orig)
    exported = repr(exception_attributes(error)) + summary(error)
    assert "zq" not in exported


IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,62}")
_NAMES = _NAME_SECRET | st.from_regex(IDENTIFIER, fullmatch=True)
"""Any printable text a ``RAISE`` may put in a name field, and names that look like names."""
CONSTRAINT_SOURCES = ["nbtinsert.c", "execMain.c", "ri_triggers.c", "execIndexing.c"]
"""Where PostgreSQL raises the integrity violations it fills the name fields of."""


@settings(max_examples=300, deadline=None)
@given(
    name=_NAMES,
    code=st.sampled_from(["23505", "23503", "23999"]),
    source=st.sampled_from([*CONSTRAINT_SOURCES, "pl_exec.c", "plpy_elog.c", "", None]),
    asyncpg=st.booleans(),
)
def test_a_name_is_exported_only_from_postgresqls_own_check_and_only_an_identifier(
    name: str, code: str, source: str | None, asyncpg: bool
) -> None:
    # RAISE ... USING ERRCODE = '23505', COLUMN = '<data>' chooses an integrity code too:
    # only the server's constraint checks (its source file says which) fill in real names.
    orig = sqlite3.DatabaseError("raised")
    orig.sqlstate = code  # type: ignore[attr-defined]
    if asyncpg:  # asyncpg's error carries the fields itself
        orig.constraint_name = name  # type: ignore[attr-defined]
        orig.server_source_filename = source  # type: ignore[attr-defined]
    else:
        orig.diag = _Diag(name, source)  # type: ignore[attr-defined]
    error = sa.exc.DBAPIError("SELECT 1", None, orig)
    exported = repr(exception_attributes(error)) + summary(error)
    named = source in CONSTRAINT_SOURCES and IDENTIFIER.fullmatch(name) is not None
    assert (f"constraint {name} " in exported) is named
    if not named:
        assert "constraint" not in exported and "column" not in exported


MYSQL_DRIVER_ERRORS = [
    "pymysql.err",
    "MySQLdb._exceptions",
    "mysql.connector.errors",
    "asyncmy.errors",
    "mariadb",
    "cymysql.err",
    "aiomysql",
]
"""Where the MySQL / MariaDB drivers SQLAlchemy supports define their errors."""


@settings(max_examples=100, deadline=None)
@given(secret=_SECRET, module=st.sampled_from(MYSQL_DRIVER_ERRORS))
def test_a_mysql_drivers_statement_is_lexed_as_mysql(secret: str, module: str) -> None:
    escaped = secret.replace("\\", "\\\\").replace('"', '""')
    driver_error = type("IntegrityError", (Exception,), {"__module__": module})
    error = sa.exc.IntegrityError(  # "..." is a string to MySQL, a name to PostgreSQL
        f'INSERT INTO notes (title, body) VALUES ("mine", "{escaped}")',
        None,
        driver_error(1062, "Duplicate entry"),
    )
    message = exception_attributes(error)["exception.message"]
    assert message == f"({module}.IntegrityError) [SQL: INSERT INTO notes (title, body) VALUES (?)]"

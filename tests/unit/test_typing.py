"""What a user's ``mypy --strict`` sees of the public API: the decorators and ``instrument_app``
keep the types of what they are given (``py.typed`` promises it)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import syncperf

SRC = Path(syncperf.__file__).resolve().parents[1]


def _mypy(tmp_path: Path, code: str) -> list[str]:
    """The errors ``mypy --strict`` reports on ``code`` (its notes and summary left out)."""
    (tmp_path / "snippet.py").write_text(textwrap.dedent(code))
    env = {**os.environ, "MYPYPATH": str(SRC)}
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "snippet.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return [line for line in done.stdout.splitlines() if ": error:" in line]


def _line(tmp_path: Path, marker: str) -> int:
    """The number of the snippet's line holding ``marker``."""
    lines = (tmp_path / "snippet.py").read_text().splitlines()
    return next(n for n, line in enumerate(lines, 1) if marker in line)


def test_the_publish_decorator_and_context_manager_keep_their_types(tmp_path: Path) -> None:
    errors = _mypy(
        tmp_path,
        """
        from typing_extensions import assert_type
        from syncperf.outbox import Outbox, PublishBatch

        box = Outbox("todos", destination="todo.events", system="memory")

        @box.publish
        def relay_once(rows: list[str]) -> int:
            return len(rows)

        @box.publish(count=3)
        async def relay_async(rows: list[str]) -> int:
            return len(rows)

        async def relay_block(rows: list[str]) -> None:
            with box.publish(count=len(rows)) as batch:
                assert_type(batch, PublishBatch)
            async with box.publish() as batch:
                assert_type(batch, PublishBatch)

        assert_type(relay_once(["a"]), int)
        n: str = relay_async  # wrong: the decorated function keeps its type
        """,
    )
    assert len(errors) == 1, errors
    assert f"snippet.py:{_line(tmp_path, '# wrong')}: error: Incompatible types" in errors[0]


def test_instrument_app_keeps_the_apps_type_and_catches_a_misspelt_option(
    tmp_path: Path,
) -> None:
    errors = _mypy(
        tmp_path,
        """
        from fastapi import FastAPI
        from typing_extensions import assert_type
        from syncperf.asgi import instrument_app, uninstrument_app

        app = instrument_app(FastAPI(), {"/sync/pull": "pull"}, http_metrics=False)
        assert_type(app, FastAPI)
        assert_type(uninstrument_app(app), FastAPI)
        instrument_app(FastAPI(), http_metric=False)  # misspelt
        """,
    )
    assert len(errors) == 1, errors
    assert f"snippet.py:{_line(tmp_path, '# misspelt')}: error:" in errors[0]
    assert 'did you mean "http_metrics"' in errors[0]

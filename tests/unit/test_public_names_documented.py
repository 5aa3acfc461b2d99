"""Every name a public module exports (``__all__``) is documented in README.md or docs/*.md."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import syncperf

ROOT = Path(__file__).resolve().parents[2]


def _public_modules() -> list[str]:
    found = pkgutil.walk_packages(syncperf.__path__, "syncperf.")
    return ["syncperf"] + [
        info.name for info in found if not any(p.startswith("_") for p in info.name.split("."))
    ]


def _docs() -> str:
    pages = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
    return "\n".join(page.read_text(encoding="utf-8") for page in pages)


def test_the_public_modules_are_found() -> None:
    modules = _public_modules()
    assert {"syncperf.testing", "syncperf.outbox", "syncperf.adapters.zero"} <= set(modules)


@pytest.mark.parametrize("module", _public_modules())
def test_every_exported_name_is_documented(module: str) -> None:
    exported = getattr(importlib.import_module(module), "__all__", ())
    text = _docs()
    missing = [
        name
        for name in exported
        if name != "__version__" and not re.search(rf"\b{re.escape(name)}\b", text)
    ]
    assert missing == [], f"{module} exports names documented nowhere"

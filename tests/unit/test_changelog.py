"""CHANGELOG.md follows Keep a Changelog 1.1.0: every version heading is a link."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_version_heading_has_a_link_definition() -> None:
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    headings = re.findall(r"^## \[([^\]]+)\]", text, re.M)
    defined = {m.lower() for m in re.findall(r"^\[([^\]]+)\]: https://\S+$", text, re.M)}
    assert headings, "no version heading"
    assert [h for h in headings if h.lower() not in defined] == []

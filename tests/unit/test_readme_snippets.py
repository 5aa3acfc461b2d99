"""The README's quickstart snippets record what they say they record."""

from __future__ import annotations

import re
from pathlib import Path

import syncperf
from syncperf.testing import capture

ROOT = Path(__file__).resolve().parents[2]


def _snippet(containing: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    (block,) = [b for b in blocks if containing in b]
    return block


def test_the_record_from_inside_snippet_counts_its_conflict() -> None:
    code = _snippet("syncperf.current_operation()")
    namespace = {"syncperf": syncperf, "load_changes": lambda since: [1, 2, 3], "since": 0}
    with capture() as cap:
        exec(compile(code, "README.md", "exec"), namespace)  # our own README
        assert cap.total("sync.conflicts", {"sync.entity": "todo"}) == 1
        assert cap.total("sync.operation.duration", {"sync.operation": "pull"}) == 1
        assert cap.total("syncperf.dropped") == 0

"""Load a file of ``examples/`` as a fresh module, as its tests do."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(filename: str, name: str) -> ModuleType:
    """Execute ``examples/<filename>`` as module ``name`` (a distinct name gives a distinct
    module, with its own module-level state)."""
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / filename)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module

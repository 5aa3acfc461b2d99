"""The layers of docs/design.md hold: imports point down, and no private name crosses packages."""

from __future__ import annotations

import ast
from pathlib import Path

import syncperf

SRC = Path(syncperf.__file__).parent
BOTTOM = {"syncperf._gate", "syncperf._config", "syncperf._version", "syncperf.exceptions"}


def _module(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of the imports made when ``path`` is imported: at module level, outside
    ``if TYPE_CHECKING:``."""
    package = _module(path) if path.name == "__init__.py" else _module(path).rpartition(".")[0]
    found = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            found.append((base, [alias.name for alias in node.names]))
    return [(name, names) for name, names in found if name.startswith("syncperf")]


MODULES = {_module(path): path for path in SRC.rglob("*.py")}


def _targets(name: str, names: list[str]) -> set[str]:
    """The syncperf modules an import loads (``from pkg import module`` loads the module)."""
    modules = {f"{name}.{n}" for n in names if f"{name}.{n}" in MODULES}
    if name in MODULES and (not names or len(modules) < len(names)):
        modules.add(name)  # a name defined in ``name`` itself
    return modules


def test_no_module_imports_a_module_that_imports_it_back() -> None:
    graph = {
        module: set().union(*(_targets(n, names) for n, names in _imports(path))) - {module}
        for module, path in MODULES.items()
    }
    done: set[str] = set()

    def visit(module: str, trail: tuple[str, ...]) -> None:
        assert module not in trail, " -> ".join((*trail, module))
        if module in done:
            return
        for target in graph.get(module, ()):
            visit(target, (*trail, module))
        done.add(module)

    for module in graph:
        visit(module, ())


def test_metrics_and_tracing_import_nothing_above_them() -> None:
    for module, path in MODULES.items():
        layer = module.split(".")[1] if "." in module else ""
        if layer not in ("_metrics", "_tracing"):
            continue
        for name, names in _imports(path):
            for target in _targets(name, names) or {name}:
                allowed = target.startswith(f"syncperf.{layer}") or target in BOTTOM
                assert allowed or target == "syncperf", f"{module} imports {target}"
                assert target != "syncperf", f"{module} imports the package's __init__"


def _package(module: str) -> str:
    return module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]


def test_no_private_name_is_imported_from_another_package() -> None:
    for module, path in MODULES.items():
        for name, names in _imports(path):
            for imported in names:
                if imported.startswith("_") and not imported.startswith("__"):
                    if f"{name}.{imported}" in MODULES:
                        continue
                    assert _package(name) == _package(module), (
                        f"{module} imports {imported} from {name}"
                    )

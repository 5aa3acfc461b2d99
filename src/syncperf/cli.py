"""The ``syncperf`` command: ``demo``, ``rules``, ``dashboard``, ``bench``."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

_COMMANDS = {
    "demo": ("syncperf._demo", "Run a live instrumented sync service under simulated clients."),
    "rules": ("syncperf._ops.rules", "Write Prometheus alert and recording rules to stdout."),
    "dashboard": ("syncperf._ops.dashboard", "Write a Grafana dashboard (JSON) to stdout."),
    "bench": ("syncperf._bench", "Measure syncperf's per-operation cost against naive OTel."),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``syncperf`` command."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print("usage: syncperf {" + ",".join(_COMMANDS) + "} [options]\n")
        for name, (_, summary) in _COMMANDS.items():
            print(f"  {name:<10} {summary}")
        return 0 if args else 2
    if args[0] in ("-V", "--version"):
        from syncperf import __version__

        print(__version__)
        return 0
    command = _COMMANDS.get(args[0])
    if command is None:
        print(f"syncperf: unknown command {args[0]!r}; try 'syncperf --help'", file=sys.stderr)
        return 2
    module = importlib.import_module(command[0])
    return int(module.main(args[1:]) or 0)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

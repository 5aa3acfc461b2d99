"""The ``syncperf`` command's entry point (``[project.scripts]``; ``python -m _syncperf_cli``).

A top-level module, outside the ``syncperf`` package, so that Ctrl-C while the package imports
(a few tenths of a second) ends the command as Ctrl-C later does (``syncperf.cli.main``): one
line on stderr and exit status 130, not a traceback.
"""

from __future__ import annotations

import sys

INTERRUPTED = 130
"""``syncperf.cli.INTERRUPTED``, which cannot be imported before the package is."""


def main() -> int:
    """Import and run the ``syncperf`` command; Ctrl-C before it runs is exit status 130.

    A Ctrl-C that lands in a callback while the package imports (the import lock's weakref
    callback) cannot propagate: Python would print it as "Exception ignored"; it is taken as
    the interrupt it is instead."""
    interrupted = False
    previous = sys.unraisablehook

    def hook(unraisable: sys.UnraisableHookArgs) -> None:
        nonlocal interrupted
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            interrupted = True
        else:
            previous(unraisable)

    sys.unraisablehook = hook
    try:
        from syncperf.cli import main as run
    except KeyboardInterrupt:
        interrupted = True
    finally:
        sys.unraisablehook = previous
    if interrupted:
        print("syncperf: interrupted", file=sys.stderr)
        return INTERRUPTED
    return run()  # handles its own Ctrl-C


if __name__ == "__main__":
    sys.exit(main())

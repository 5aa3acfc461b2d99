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
    """Import and run the ``syncperf`` command; Ctrl-C before it runs is exit status 130."""
    try:
        from syncperf.cli import main as run

        return run()
    except KeyboardInterrupt:  # while importing: ``run`` handles its own
        print("syncperf: interrupted", file=sys.stderr)
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())

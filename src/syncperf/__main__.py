"""``python -m syncperf``: the ``syncperf`` command, for an environment whose scripts
directory is not on ``PATH``."""

from __future__ import annotations

import sys

from _syncperf_cli import main

if __name__ == "__main__":
    sys.exit(main())

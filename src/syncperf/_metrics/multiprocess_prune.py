"""Dropping the live gauges of workers that are gone from the multiprocess directory.

Imported only in multiprocess mode (the scrape-time write): it needs ``prometheus_client``.
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import Any

from prometheus_client.multiprocess import mark_process_dead

_LIVE_FILE = re.compile(r"gauge_live[a-z]+_([0-9]+)\.db")


def prune_dead(directory: str, value_class: Any) -> None:
    """``mark_process_dead`` for every process that left live-gauge files (``livesum``,
    ``livemostrecent``...) and no longer exists: a worker killed by SIGKILL, or stopped by a
    server that has no hook to call it (``uvicorn --workers``), would otherwise stay in
    ``sync.operations.active`` forever. Its counters and histograms stay in the sums.

    Only when the files are named by pid (prometheus_client's default process identifier,
    which ``value_class`` uses): other names are not processes to look up.
    """
    if _identifier(value_class) is not os.getpid:
        return
    try:
        names = os.listdir(directory)
    except OSError:
        return
    pids = {int(found[1]) for name in names if (found := _LIVE_FILE.fullmatch(name))}
    for pid in pids:
        if not _alive(pid):
            with contextlib.suppress(OSError):  # another worker removed them first
                mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (one of another user's, which may not be signalled,
    does; a dead one not yet reaped by its parent still does, until it is). A number no
    ``pid_t`` holds (a stray file's name) is taken for one alive: its files are not touched."""
    if not 0 < pid < 2**31:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists
        return True
    return True


def _identifier(value_class: Any) -> Any:
    """The ``process_identifier`` prometheus_client's ``MultiProcessValue`` class was made
    with (its files' names), or None when it cannot be told."""
    check = getattr(value_class, "_MmapedValue__check_for_pid_change", None)
    code, cells = getattr(check, "__code__", None), getattr(check, "__closure__", None)
    if code is None or cells is None:
        return None
    found = dict(zip(code.co_freevars, cells, strict=False)).get("process_identifier")
    return None if found is None else found.cell_contents

"""Forked workers for multiprocess tests: each has its own pid, so its own multiprocess files."""

from __future__ import annotations

import json
import os
import traceback
from collections.abc import Callable

PULLS = 'sync_operation_duration_seconds_count{sync_operation="pull",sync_outcome="success"}'


def in_a_worker(work: Callable[[], object]) -> object:
    """Run ``work`` in a forked worker process; its JSON result (the worker ends with
    ``os._exit``: no exit hook runs unless ``work`` calls it)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(read)
            os.write(write, json.dumps(work()).encode())
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        result = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return json.loads(result)


def pulls(exposition: str) -> float:
    """The successful pulls an exposition counts."""
    return sum(
        float(line.split()[-1]) for line in exposition.splitlines() if line.startswith(PULLS)
    )

"""Forked workers for multiprocess tests: each has its own pid, so its own multiprocess files."""

from __future__ import annotations

import json
import os
import select
import signal
import time
import traceback
from collections.abc import Callable

PULLS = 'sync_operation_duration_seconds_count{sync_operation="pull",sync_outcome="success"}'


def in_a_worker(work: Callable[[], object], timeout: float = 60.0) -> object:
    """Run ``work`` in a forked worker process; its JSON result (the worker ends with
    ``os._exit``: no exit hook runs unless ``work`` calls it). A worker that has not answered
    within ``timeout`` seconds is killed and fails the test: a hang fails, never blocks."""
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
    return answer_of(pid, read, timeout)


def answer_of(pid: int, read: int, timeout: float = 60.0) -> object:
    """The JSON a forked child ``pid`` writes to the pipe end ``read`` (closed here), once it
    has exited with status 0; a child that has not answered within ``timeout`` is killed."""
    deadline = time.monotonic() + timeout
    chunks = []
    with os.fdopen(read, "rb") as pipe:
        while True:
            if not select.select([pipe], [], [], max(0.0, deadline - time.monotonic()))[0]:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise AssertionError(f"the worker did not answer within {timeout:g} s")
            chunk = os.read(pipe.fileno(), 65536)
            if not chunk:
                break
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return json.loads(b"".join(chunks))


def pulls(exposition: str) -> float:
    """The successful pulls an exposition counts."""
    return sum(
        float(line.split()[-1]) for line in exposition.splitlines() if line.startswith(PULLS)
    )

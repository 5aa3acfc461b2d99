"""Running a piece of a test in a forked child, as a pre-fork server's worker runs."""

from __future__ import annotations

import os
from collections.abc import Callable


def in_child(run: Callable[[], object]) -> str:
    """``repr(run())`` as a child forked from this process sees it (the child must exit
    cleanly: a ``run`` that raises fails the test)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a worker forked from a master that served requests
        code = 1
        try:
            os.write(write, repr(run()).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        found = pipe.read()
    assert os.waitstatus_to_exitcode(status) == 0
    return found

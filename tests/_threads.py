"""A lock held by another thread, as a long collection or a thread binding series holds it."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def held_elsewhere(lock: Any, at_most: float = 0.5) -> Iterator[None]:
    """``lock`` held by another thread while the block runs (``at_most`` seconds at most: a
    block that waits for it goes on then)."""
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            held.set()
            release.wait(at_most)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait()
    try:
        yield
    finally:
        release.set()
        holder.join()

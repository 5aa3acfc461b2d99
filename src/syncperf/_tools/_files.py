"""Writing the files the tools produce (``-o``, a baseline) whole or not at all."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from pathlib import Path


def replace_file(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` so that a reader finds the previous file or the new
    one, never a part of it: a temporary file in the same directory, flushed to the disk, then
    renamed over ``path``. A failure (a full disk, a quota, a file-size limit) removes the
    temporary file and raises ``OSError``; ``path`` is then as it was.

    The replaced file keeps its mode (and owner, where allowed); a symlink is written through.
    What is not a regular file (``/dev/stdout``, a pipe) is written in place, and so is a file
    in a directory where no file may be created (a file that may be written, there)."""
    data = text.encode("utf-8")
    try:
        existing: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        existing = None
    if existing is not None and not stat.S_ISREG(existing.st_mode):
        _write_in_place(path, data)  # nothing to replace
        return
    if existing is not None and not os.access(path, os.W_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
    directory, name = os.path.split(os.path.realpath(path))
    temporary = os.path.join(directory, f".{name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    except PermissionError:
        _write_in_place(path, data)
        return
    try:
        with os.fdopen(fd, "wb") as handle:
            if existing is not None:
                _keep_owner_and_mode(handle.fileno(), existing)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, os.path.join(directory, name))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _sync_directory(directory)


def _write_in_place(path: str | Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)


def _keep_owner_and_mode(fd: int, existing: os.stat_result) -> None:
    """The new file (created with the mode ``open`` gives a new file) as the one it replaces."""
    with contextlib.suppress(OSError):  # only root may give a file away
        os.fchown(fd, existing.st_uid, existing.st_gid)
    os.fchmod(fd, stat.S_IMODE(existing.st_mode))


def _sync_directory(directory: str) -> None:
    """Make the rename durable too (best effort: not every file system can)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

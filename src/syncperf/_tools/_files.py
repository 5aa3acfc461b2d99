"""Writing the files the tools produce (``-o``, a baseline) whole or not at all."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat
import sys
from pathlib import Path


def shown(path: str | Path) -> str:
    """``path`` for a one-line message: as written when every character is printable, else
    its ``repr`` (a newline or an escape sequence in a file name would break the line)."""
    text = os.fspath(path)
    return text if text.isprintable() else repr(text)


def replace_file(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` so that a reader finds the previous file or the new
    one, never a part of it: a temporary file in the same directory, flushed to the disk, then
    renamed over ``path``. A failure (a full disk, a quota, a file-size limit) removes the
    temporary file and raises ``OSError``; ``path`` is then as it was.

    The replaced file keeps its mode (and owner, where allowed); a symlink is written through.
    What is not a regular file (a pipe, a device) and whatever is under ``/dev`` or ``/proc``
    is written in place, and so is a file in a directory where no file may be created (a file
    that may be written, there). A standard stream or another open descriptor
    (``/dev/stdout``, ``/dev/fd/N``, ``/proc/self/fd/N``) is written to as it is open, never
    truncated: ``{ syncperf rules -o /dev/stdout; ...; } > file`` keeps every output. A path
    ending in a separator names a directory (``IsADirectoryError``)."""
    data = text.encode("utf-8")
    name = os.path.basename(os.fspath(path))
    if name in ("", ".", ".."):  # ``missing_dir/``: a directory, never a file named so
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    special = _special(path)
    if special is not None:
        _write_special(path, special, data)
        return
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
    try:
        temporary, fd = _create_temporary(directory, name)
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


_FD_PATH = re.compile(
    r"/dev/(stdin|stdout|stderr)|/dev/fd/(\d+)|/proc/(self|thread-self|\d+)/fd/(\d+)"
)
_STREAMS = {"stdin": 0, "stdout": 1, "stderr": 2}
_MAX_LINKS = 40


def _special(path: str | Path) -> int | None:
    """For a path under ``/dev`` or ``/proc`` (as given, on the way through its symlinks, or
    resolved): the open descriptor it names (``/dev/stdout``: 1), else -1; None for any other
    path (a rename there would replace what the descriptor's file or device is)."""
    current = os.path.abspath(path)
    for _ in range(_MAX_LINKS):
        found = _FD_PATH.fullmatch(current)
        if found is not None:
            stream, fd, pid, pid_fd = found.groups()
            if stream is not None:
                return _STREAMS[stream]
            if fd is not None:
                return int(fd)
            if pid in ("self", "thread-self", str(os.getpid())):
                return int(pid_fd)
        if current.startswith(("/dev/", "/proc/")):
            return -1
        try:
            target = os.readlink(current)
        except OSError:  # not a symlink (or not there)
            break
        current = os.path.normpath(os.path.join(os.path.dirname(current), target))
    return -1 if os.path.realpath(path).startswith(("/dev/", "/proc/")) else None


def _write_special(path: str | Path, fd: int, data: bytes) -> None:
    """Write to the descriptor ``fd`` names as it is open (at its offset, never truncated), or,
    for another file under ``/dev`` or ``/proc`` (``fd`` -1) or a descriptor not open for
    writing, in place."""
    if fd >= 0:
        for stream in (sys.stdout, sys.stderr):  # what was printed comes first
            with contextlib.suppress(Exception):
                stream.flush()
        try:
            with os.fdopen(os.dup(fd), "wb") as handle:  # closes the copy, not ``fd``
                handle.write(data)
            return
        except OSError as exc:
            if exc.errno != errno.EBADF:  # not open (for writing): open the path, as before
                raise
    _write_in_place(path, data)


def _create_temporary(directory: str, name: str) -> tuple[str, int]:
    """A new file beside ``name``: ``.{name}.{random}.tmp``, or, when that name is too long
    for the file system, one no longer than ``name`` (its start, cut by 14 bytes)."""
    token = secrets.token_hex(4)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    temporary = os.path.join(directory, f".{name}.{token}.tmp")
    try:
        return temporary, os.open(temporary, flags, 0o666)
    except OSError as exc:
        if exc.errno != errno.ENAMETOOLONG:
            raise
    encoded = os.fsencode(name)
    start = os.fsdecode(encoded[: max(len(encoded) - 14, 0)])  # undecodable bytes kept as are
    temporary = os.path.join(directory, f".{start}.{token}.tmp")
    return temporary, os.open(temporary, flags, 0o666)


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

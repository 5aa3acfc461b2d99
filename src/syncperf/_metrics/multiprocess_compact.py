"""Folding the counter, histogram and summary files of workers that are gone into one archive
file per type, so a scrape reads the live workers' files and one archive each, however many
workers were recycled (gunicorn's ``--max-requests``, uvicorn's ``--limit-max-requests``).

The files keep their sums: an archive holds, per file key, the exact sum of the values the
folded files held, as one to a few doubles (``multiprocess_sum.expansion``: the correctly
rounded sum first, then what it rounded off), each under the key with as many spaces after
it as its rank (the same series to a reader: ``MultiProcessCollector`` sums per series across
entries and files, syncperf's collector exactly). Readers that cooperate
(``multiprocess_group.Collector``) read under a shared ``flock`` on ``LOCK``; a fold holds it
exclusively, taken without waiting (busy: no fold this time), so no reader sees a folded file
both in the archive and on its own, or in neither. A fold writes the new archive to a temp
file, then a journal (``JOURNAL``: the temp, its sha256 and the folded files), then replaces
the archive, removes the folded files and the journal. A process that dies at any step leaves
either the old archive and every folded file (the journal's sha256 is not the archive's: the
temp is dropped) or the new archive and the journal naming the files it holds (those files
are removed, and readers leave them out meanwhile, ``readable``): the next fold finishes the
step first.

Imported only in multiprocess mode: it needs ``prometheus_client``.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client.mmap_dict import MmapedDict

try:
    import fcntl
except ImportError:  # not POSIX (Windows): no lock, so no fold
    fcntl = None  # type: ignore[assignment]

from syncperf._gate import raised_at
from syncperf._metrics import multiprocess_sum
from syncperf._metrics.multiprocess_prune import _alive, _identifier

_logger = logging.getLogger("syncperf")
LOCK = ".syncperf.lock"
"""The lock file readers share and a fold holds alone (the ``*.db`` glob never reads it)."""
JOURNAL = ".syncperf-compact.json"
ARCHIVE = "{}_syncperf-archive.db"
"""An archive's name: its type first (the collector reads it there), no pid after it."""
_TEMP = ".syncperf-archive-{}.tmp"
_DEAD_FILE = re.compile(r"(counter|histogram|summary)_([0-9]+)\.db")
READ_WAIT = 2.0
"""Seconds a read waits for a fold to end before it reads without the lock (a scrape must
never wait for ever; a fold reads at most ``ENTRIES`` values past its first file: ~0.15 s)."""
BATCH = 8
"""Files of each type one fold takes at most (in name order): the lock is held for a
bounded time, however many workers exited since the last fold (the next scrapes go on)."""
ENTRIES = 20_000
"""Values one fold reads from the files it folds, at most (past one file): a file holds a
value per counter series and ~17 per histogram series, so the time a fold holds the lock
follows the series, not only the files (about 0.15 s for 20,000 on a 2-core machine)."""
_reported: set[str] = set()
"""The files already reported unreadable (once each per process)."""


@contextlib.contextmanager
def shared(directory: str) -> Iterator[bool]:
    """Hold the lock shared while a reader reads ``directory``; yields whether it is held
    (not after ``READ_WAIT`` seconds of folds, or in a directory where it cannot be made)."""
    fd = _open_lock(directory) if fcntl is not None else None
    held = False
    try:
        deadline = time.monotonic() + READ_WAIT
        while fd is not None and not held:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                held = True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.005)
            except OSError:
                break
        yield held
    finally:
        if fd is not None:
            _close_lock(fd)


def _open_lock(directory: str) -> int | None:
    try:
        fd = os.open(os.path.join(directory, LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError:
        return None
    _open.add(fd)
    return fd


def _close_lock(fd: int) -> None:
    """Release the lock: close ``fd``, unless a fork closed this process's copy already (the
    number may be another file's by now)."""
    if fd in _open:
        _open.discard(fd)
        os.close(fd)


_open: set[int] = set()
"""The lock files open in this process: a child forked meanwhile closes its copies."""


def _in_child() -> None:
    """A child forked while a read or a fold held the lock: its copy of the descriptor would
    hold the lock for the child's whole life (``flock`` locks belong to the open file, which
    fork shares), blocking every fold, or every read for ``READ_WAIT``. Closing the copy
    leaves the parent's lock as it is."""
    for fd in list(_open):
        with contextlib.suppress(OSError):
            os.close(fd)
    _open.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_in_child)


def readable(directory: str) -> list[str]:
    """The ``*.db`` files a reader holding the lock reads: all of them, less those a fold that
    died after replacing the archive had yet to remove (the archive holds their counts)."""
    files = glob.glob(os.path.join(directory, "*.db"))
    journal = _journal(directory)
    if journal is None or _sha256(os.path.join(directory, journal["archive"])) != journal["sha256"]:
        return files
    folded = {os.path.join(directory, name) for name in journal["folded"]}
    return [f for f in files if f not in folded]


def compact(directory: str, value_class: Any) -> None:
    """Fold the files of processes that are gone into the archives (never raises). Only when
    the files are named by pid (``value_class``'s identifier is ``os.getpid``), once one such
    file exists (each fold is a net gain: the archive replaces at least one file, at the cost
    of one read of them, as a scrape's), and only when no reader or other fold holds the
    lock."""
    if fcntl is None or _identifier(value_class) is not os.getpid:
        return
    try:
        if not _dead(directory) and not os.path.exists(os.path.join(directory, JOURNAL)):
            return
        fd = _open_lock(directory)
        if fd is None:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # a reader or another fold: the next scrape folds
            _close_lock(fd)
            return
        try:
            if _recover(directory):
                for kind, names in _dead(directory).items():
                    _fold(directory, kind, names[:BATCH])
        finally:
            _close_lock(fd)
    except Exception as error:
        _logger.debug("syncperf: folding multiprocess files failed: %s", raised_at(error))


def _dead(directory: str) -> dict[str, list[str]]:
    """The counter, histogram and summary files of processes that are gone, by type."""
    found: dict[str, list[str]] = {}
    me = os.getpid()
    for name in sorted(os.listdir(directory)):
        match = _DEAD_FILE.fullmatch(name)
        if match and (pid := int(match[2])) != me and not _alive(pid):
            found.setdefault(match[1], []).append(name)
    return found


def _fold(directory: str, kind: str, names: list[str]) -> None:
    """Fold ``names`` (files of ``kind``) into its archive, up to ``ENTRIES`` values read from
    them (one file at least: the next scrapes take the rest); those that cannot be read
    stay."""
    archive = os.path.join(directory, ARCHIVE.format(kind))
    totals: dict[str, list[float]] = {}
    checked: set[str] = set()  # the keys found well formed (the same series in every file)
    if os.path.exists(archive) and _add(archive, totals, checked) is None:
        return  # an archive that cannot be read is left alone, with the files to fold
    folded, read = [], 0
    for name in names:
        if read >= ENTRIES:
            break
        added = _add(os.path.join(directory, name), totals, checked)
        if added is not None:
            folded.append(name)
            read += added
    if not folded:
        return
    temp = os.path.join(directory, _TEMP.format(kind))
    with contextlib.suppress(FileNotFoundError):
        os.remove(temp)
    values = MmapedDict(temp)  # type: ignore[no-untyped-call]
    try:
        for key, found in totals.items():  # the exact sum: one entry a layer (the same key
            for layer, part in enumerate(multiprocess_sum.expansion(found)):  # but spaces)
                values.write_value(key + " " * layer, part, 0.0)  # type: ignore[no-untyped-call]
    finally:
        values.close()  # type: ignore[no-untyped-call]
    journal = {"archive": os.path.basename(archive), "temp": os.path.basename(temp)}
    _write_journal(directory, {**journal, "sha256": _sha256(temp), "folded": folded})
    os.replace(temp, archive)
    _finish(directory, folded)


def _add(path: str, totals: dict[str, list[float]], checked: set[str]) -> int | None:
    """Add the values of the file at ``path`` to ``totals``, key by key (an archive's layers
    to their key); how many it held, or None (``totals`` untouched) when it cannot be read
    whole. ``checked``: the keys already found well formed."""
    try:
        entries = [(key, value) for key, value, _, _ in MmapedDict.read_all_values_from_file(path)]  # type: ignore[no-untyped-call]
        for key, _ in entries:  # a key the collector cannot parse would fail every scrape
            if key not in checked:
                if not _valid_key(json.loads(key)):
                    raise ValueError("not a key prometheus_client writes")
                checked.add(key)
    except FileNotFoundError:
        return None
    except Exception as error:
        _report(os.path.basename(path), error)
        return None
    for key, value in entries:
        totals.setdefault(key.rstrip(" "), []).append(value)
    return len(entries)


def _valid_key(parsed: Any) -> bool:
    """Whether ``parsed`` (a file key, parsed) has the shape ``mmap_key`` gives it: metric
    name, sample name, labels (text to text), help text."""
    if type(parsed) is not list or len(parsed) != 4:
        return False
    name, sample, labels, help_text = parsed
    return (
        all(type(v) is str for v in (name, sample, help_text))
        and type(labels) is dict
        and all(type(v) is str for v in labels.values())
    )


def _report(name: str, error: BaseException) -> None:
    """Log once per process that the file ``name`` cannot be read (never its contents)."""
    if name not in _reported:
        _reported.add(name)
        _logger.warning(
            "syncperf: a multiprocess file cannot be read, left as it is: %s (%s)",
            name,
            raised_at(error),
        )


def _recover(directory: str) -> bool:
    """Finish the fold a dead process left (hold the lock alone): remove the files it folded
    if the archive is the one it wrote, else its temp file. False: the journal cannot be read
    (left alone, and nothing is folded while it is there)."""
    path = os.path.join(directory, JOURNAL)
    if not os.path.exists(path):
        return True
    journal = _journal(directory)
    if journal is None:
        _report(JOURNAL, ValueError("not a journal a fold wrote"))
        return False
    if _sha256(os.path.join(directory, journal["archive"])) == journal["sha256"]:
        _finish(directory, journal["folded"])
        return True
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(directory, journal["temp"]))
    os.remove(path)
    return True


def _finish(directory: str, folded: list[str]) -> None:
    """The archive holds ``folded``: remove them, then the journal."""
    for name in folded:
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(directory, name))
    os.remove(os.path.join(directory, JOURNAL))


def _journal(directory: str) -> dict[str, Any] | None:
    """The journal of a fold under way or cut short; None when there is none, or it is not
    one a fold wrote."""
    try:
        with open(os.path.join(directory, JOURNAL), "rb") as file:
            found = json.loads(file.read())
        names = [found["archive"], found["temp"], *found["folded"]]
        if all(isinstance(n, str) and n == os.path.basename(n) for n in names) and isinstance(
            found["sha256"], str
        ):
            return dict(found)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _write_journal(directory: str, journal: dict[str, Any]) -> None:
    temp = os.path.join(directory, JOURNAL + ".tmp")
    with open(temp, "w", encoding="utf-8") as file:
        json.dump(journal, file)
    os.replace(temp, os.path.join(directory, JOURNAL))


def _sha256(path: str) -> str | None:
    try:
        with open(path, "rb") as file:
            return hashlib.sha256(file.read()).hexdigest()
    except OSError:
        return None

"""Files the tools write (``-o``, a baseline) are replaced whole or not at all: a write that
fails (a full disk, a quota, a file-size limit) leaves the previous file as it was."""

from __future__ import annotations

import errno
import os
import resource
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from syncperf import cli
from syncperf._tools._record import CheckError, Record

OLD = "groups: []  # the previous, good file\n"

RULES = "from syncperf.cli import main; raise SystemExit(main(['rules', '-o', {path!r}]))"
BASELINE = (
    "from syncperf._tools._record import CheckError, Record\n"
    "try:\n"
    "    Record().write({path!r})\n"
    "except CheckError as exc:\n"
    "    print(exc, file=__import__('sys').stderr)\n"
    "    raise SystemExit(2)\n"
)


def _limited() -> None:
    """In the child: files may not grow past 16 bytes (EFBIG; SIGXFSZ would kill it)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (16, 16))


@pytest.mark.parametrize("code", [RULES, BASELINE], ids=["rules -o", "check baseline"])
def test_a_write_past_a_file_size_limit_leaves_the_previous_file_intact(
    tmp_path: Path, code: str
) -> None:
    target = tmp_path / "out.yml"
    target.write_text(OLD, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-c", code.format(path=str(target))],
        capture_output=True,
        text=True,
        preexec_fn=_limited,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert f"cannot write {target}" in done.stderr
    assert target.read_text(encoding="utf-8") == OLD
    assert os.listdir(tmp_path) == ["out.yml"]  # no temporary file left behind


def _no_fsync(fd: int) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_failed_output_write_is_one_line_and_the_old_file_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "rules.yml"
    target.write_text(OLD, encoding="utf-8")
    monkeypatch.setattr(os, "fsync", _no_fsync)
    assert cli.write_output("syncperf rules", str(target), "groups:\n- name: new\n") == 2
    err = capsys.readouterr().err
    assert err == f"syncperf rules: cannot write {target}: No space left on device\n"
    assert target.read_text(encoding="utf-8") == OLD
    assert os.listdir(tmp_path) == ["rules.yml"]


def test_a_failed_baseline_write_is_a_check_error_and_the_old_file_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "baseline.json"
    target.write_text(OLD, encoding="utf-8")
    monkeypatch.setattr(os, "fsync", _no_fsync)
    with pytest.raises(CheckError, match=r"cannot write .*: No space left on device"):
        Record().write(target)
    assert target.read_text(encoding="utf-8") == OLD
    assert os.listdir(tmp_path) == ["baseline.json"]


def test_a_replaced_file_keeps_its_permissions(tmp_path: Path) -> None:
    target = tmp_path / "rules.yml"
    target.write_text(OLD, encoding="utf-8")
    target.chmod(0o640)
    assert cli.write_output("syncperf rules", str(target), "new\n") == 0
    assert target.read_text(encoding="utf-8") == "new\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_a_new_file_has_the_permissions_open_would_give_it(tmp_path: Path) -> None:
    umask = os.umask(0o027)
    try:
        assert cli.write_output("syncperf rules", str(tmp_path / "new.yml"), "new\n") == 0
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "new.yml").stat().st_mode) == 0o640


def test_a_symlink_is_written_through_not_replaced(tmp_path: Path) -> None:
    real = tmp_path / "real.yml"
    real.write_text(OLD, encoding="utf-8")
    link = tmp_path / "link.yml"
    link.symlink_to(real)
    assert cli.write_output("syncperf rules", str(link), "new\n") == 0
    assert link.is_symlink()
    assert real.read_text(encoding="utf-8") == "new\n"


def test_a_device_or_pipe_is_written_in_place(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert cli.write_output("syncperf rules", str(fifo), "new\n") == 0
        assert os.read(reader, 100) == b"new\n"
    finally:
        os.close(reader)
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert cli.write_output("syncperf rules", os.devnull, "new\n") == 0


def test_a_directory_that_refuses_new_files_gets_the_file_written_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "rules.yml"
    target.write_text(OLD, encoding="utf-8")
    real_open = os.open

    def no_new_files(path: str, flags: int, mode: int = 0o777) -> int:
        if flags & os.O_EXCL:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", no_new_files)
    assert cli.write_output("syncperf rules", str(target), "new\n") == 0
    assert target.read_text(encoding="utf-8") == "new\n"


STDOUT_TWICE = (
    "from syncperf.cli import main\n"
    "assert main(['rules', '-o', {path!r}]) == 0\n"
    "assert main(['dashboard', '-o', {path!r}]) == 0\n"
)


@pytest.mark.parametrize("path", ["/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"])
def test_stdout_redirected_to_a_file_gets_each_output_never_replaced(
    tmp_path: Path, path: str
) -> None:
    """``{ syncperf rules -o /dev/stdout; syncperf dashboard -o /dev/stdout; } > out.txt``:
    both land in out.txt, as without ``-o`` (a rename over it would leave one of them in an
    unlinked file)."""
    pytest.importorskip("grafana_foundation_sdk")  # the dashboard's (Python >= 3.11)
    out = tmp_path / "out.txt"
    with out.open("wb") as stdout:
        for _ in range(2):  # two commands sharing the shell's stdout
            subprocess.run(
                [sys.executable, "-c", STDOUT_TWICE.format(path=path)],
                stdout=stdout,
                timeout=60,
                check=True,
            )
    plain = subprocess.run(  # the same, without ``-o``
        [sys.executable, "-c", STDOUT_TWICE.replace(", '-o', {path!r}", "")],
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert out.read_bytes() == plain.stdout * 2
    assert os.listdir(tmp_path) == ["out.txt"]


@pytest.mark.parametrize("existing", [False, True], ids=["new", "replaced"])
def test_a_long_file_name_is_written(tmp_path: Path, existing: bool) -> None:
    """A name near NAME_MAX (255 bytes) is valid; its temporary file's name must be too."""
    target = tmp_path / ("r" * 246 + ".yml")
    if existing:
        target.write_text(OLD, encoding="utf-8")
    assert cli.write_output("syncperf rules", str(target), "new\n") == 0
    assert target.read_text(encoding="utf-8") == "new\n"
    assert os.listdir(tmp_path) == [target.name]


@pytest.mark.parametrize("suffix", ["/", "/."])
def test_a_path_naming_a_directory_that_does_not_exist_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], suffix: str
) -> None:
    path = str(tmp_path / "missing_dir") + suffix
    assert cli.write_output("syncperf rules", path, "new\n") == 2
    err = capsys.readouterr().err
    assert err == f"syncperf rules: cannot write {path}: Is a directory\n"
    assert os.listdir(tmp_path) == []

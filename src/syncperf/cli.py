"""The ``syncperf`` command: ``demo``, ``rules``, ``dashboard``, ``bench``, ``check``,
``compare``."""

from __future__ import annotations

import argparse
import importlib
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from syncperf._tools._files import replace_file, shown

_COMMANDS = {
    "demo": ("demo", "Run a live instrumented sync service under simulated clients."),
    "rules": ("monitoring.rules", "Write Prometheus alert and recording rules to stdout."),
    "dashboard": ("monitoring.dashboard", "Write a Grafana dashboard (JSON) to stdout."),
    "bench": ("bench", "Measure syncperf's per-operation cost against naive OTel."),
    "check": ("check", "Compare a test run's queries, N+1 and plan findings with a baseline."),
    "compare": ("compare", "Compare two time windows in Prometheus (before/after a deploy)."),
}

BROKEN_PIPE = 141
"""Exit status when stdout closes early (``syncperf compare | head``): 128 + SIGPIPE, what a
shell shows for a tool SIGPIPE ended; never 1, which compare and check mean as "regression"."""

INTERRUPTED = 130
"""Exit status after Ctrl-C: 128 + SIGINT, as a shell shows it; never 1 ("regression")."""

TERMINATED = 143
"""Exit status after SIGTERM that a command handles (``syncperf demo``): 128 + SIGTERM."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where a command asks for it (``syncperf demo``): a ``KeyboardInterrupt``
    so that everything treats it as Ctrl-C and cleans up, which the default SIGTERM (the
    process ends on the spot) would not."""


class Parser(argparse.ArgumentParser):
    """``argparse`` whose usage errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``prog: message`` and exit 2 (argparse prints the whole usage first); a URL
        the message echoes loses its credentials."""
        self.exit(2, f"{self.prog}: {without_secrets(message)} (see '{self.prog} --help')\n")


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_QUERY = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^\s'\"?]*)\?[^\s'\"]*")


def without_secrets(text: str) -> str:
    """``text`` with the ``user:password@`` of the URLs in it shown as ``***@`` and their
    query strings (a proxy's ``?token=``) as ``?***``.

    Everything from the first ``scheme://`` to the last ``@`` after it goes: a password may
    hold spaces or ``/``, and hiding too much of an error message is the lesser harm.
    """
    match = _SCHEME.search(text)
    at = text.rfind("@", match.end()) if match else -1
    if match is not None and at >= 0:
        text = text[: match.end()] + "***" + text[at:]
    return _QUERY.sub(r"\1?***", text)


def positive(
    kind: type[float] | type[int], most: float | None = None
) -> Callable[[str], float | int]:
    """An argparse ``type`` accepting finite numbers of ``kind`` above 0 (and at most
    ``most`` when given)."""

    def parse(raw: str) -> float | int:
        shown = without_secrets(raw)  # before the cut, which may take the '@' that marks them
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        try:
            value = kind(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {shown!r}") from None
        if not math.isfinite(value) or value <= 0:  # nan <= 0 is False: test finiteness
            raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {shown}")
        if most is not None and value > most:
            raise argparse.ArgumentTypeError(f"must be at most {most:g}, got {shown}")
        return value

    return parse


def write_output(prog: str, path: str | None, text: str) -> int:
    """Write ``text`` to ``path`` (stdout when None), replacing a file whole or not at all; a
    path that cannot be written is a one-line error and exit status 2, and so is text that is
    not valid UTF-8 (an argument holding undecodable bytes, which Python reads as lone
    surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        print(f"{prog}: an argument holds bytes that are not UTF-8", file=sys.stderr)
        return 2
    if path is None:
        sys.stdout.write(text)
        return 0
    try:
        replace_file(path, text)
    except BrokenPipeError:  # -o /dev/stdout | head: the reader stopped; main exits 141
        raise
    except OSError as exc:
        print(f"{prog}: cannot write {shown(path)}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``syncperf`` command."""
    args = list(sys.argv[1:] if argv is None else argv)
    prog = f"syncperf {args[0]}" if args and args[0] in _COMMANDS else "syncperf"
    try:
        try:
            return _run(args)
        finally:
            sys.stdout.flush()  # a closed pipe fails here, not at interpreter exit
    except BrokenPipeError:
        _silence_stdout()
        return BROKEN_PIPE
    except UnicodeEncodeError as exc:  # a stdout in ASCII (LC_ALL=C, PYTHONIOENCODING=ascii)
        print(
            f"{prog}: the output holds text {exc.encoding} cannot encode; "
            "set PYTHONIOENCODING=utf-8",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt as stop:  # Ctrl-C: what the user asked for, not a crash to report
        terminated = isinstance(stop, Terminated)
        print(f"{prog}: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return TERMINATED if terminated else INTERRUPTED


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's last flush cannot fail again (the
    recipe in the ``signal`` module's documentation)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):  # no file descriptor (captured, embedded)
        pass


def _run(args: list[str]) -> int:
    if not args:  # a usage error like any other: one line on stderr
        commands = ", ".join(_COMMANDS)
        print(
            f"syncperf: a command is required ({commands}); try 'syncperf --help'", file=sys.stderr
        )
        return 2
    if args[0] in ("-h", "--help"):
        print("usage: syncperf {" + ",".join(_COMMANDS) + "} [options]\n")
        for name, (_, summary) in _COMMANDS.items():
            print(f"  {name:<10} {summary}")
        return 0
    if args[0] in ("-V", "--version"):
        from syncperf import __version__

        print(__version__)
        return 0
    command = _COMMANDS.get(args[0])
    if command is None:
        shown = without_secrets(repr(args[0]))
        print(f"syncperf: unknown command {shown}; try 'syncperf --help'", file=sys.stderr)
        return 2
    module = importlib.import_module("syncperf._tools." + command[0])
    return int(module.main(args[1:]) or 0)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

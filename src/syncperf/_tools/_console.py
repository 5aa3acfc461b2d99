"""rich's ``Console`` for the tools' output, where a closed stdout is exit status 141."""

from __future__ import annotations

import errno
import os

from rich.console import Console


class PipeConsole(Console):
    """A ``Console`` whose closed stdout (``syncperf compare | head``) raises
    ``BrokenPipeError``, which ``cli.main`` ends with exit status 141: rich's own
    ``on_broken_pipe`` raises ``SystemExit(1)``, which compare and demo mean as "regression"
    and "a check failed"."""

    def on_broken_pipe(self) -> None:
        """Print nothing more and raise ``BrokenPipeError``."""
        self.quiet = True
        raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))

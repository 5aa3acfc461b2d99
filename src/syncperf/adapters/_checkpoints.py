"""Checkpoints on the wire: a protocol's checkpoint time, read for ``sync.pull.staleness``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from syncperf._gate import describe
from syncperf._operation import SyncOperation
from syncperf._staleness import from_millis
from syncperf.adapters._base import Malformed

__all__ = ["checkpoint_ms"]


def checkpoint_ms(op: SyncOperation, params: Mapping[str, Any], names: tuple[str, ...]) -> None:
    """Record the checkpoint of the first of ``names`` present in ``params`` as milliseconds
    since the epoch; absent, empty, ``null`` and ``undefined`` mean "never synced".

    Raises:
        Malformed: the value is not a number of milliseconds.
    """
    for key in names:
        value = params.get(key)
        if value is None or value in _NO_CHECKPOINT:
            continue
        seconds = from_millis(value)
        if seconds is None:
            raise Malformed(f"{key} is not a number of milliseconds: {describe(value)}")
        op.record_checkpoint(seconds)
        return


_NO_CHECKPOINT = frozenset({"", "null", "undefined"})

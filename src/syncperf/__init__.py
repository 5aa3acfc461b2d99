"""syncperf: observability for the sync endpoints of offline-first backends."""

import importlib
from typing import Any

from syncperf import _import_guard as _import_guard  # first: before the SDK's trace module
from syncperf import _process_exit as _process_exit  # multiprocessing children flush too
from syncperf._config import Config
from syncperf._decorators import Adapter, instrument_sync
from syncperf._operation import SyncOperation, current_operation
from syncperf._runtime import configure, force_flush
from syncperf._scope import sync_operation
from syncperf._version import __version__
from syncperf.exceptions import ConfigError, MeasurementError, SyncPerfError

__all__ = [
    "Adapter",
    "Config",
    "ConfigError",
    "MeasurementError",
    "SyncOperation",
    "SyncPerfError",
    "__version__",
    "configure",
    "current_operation",
    "force_flush",
    "instrument_sync",
    "sync_operation",
]

_SUBMODULES = frozenset({"adapters", "asgi", "export", "outbox", "sqlalchemy", "testing"})


def __getattr__(name: str) -> Any:
    """Import integration submodules on first access (``syncperf.asgi``), never at import."""
    if name in _SUBMODULES:
        return importlib.import_module(f"syncperf.{name}")
    raise AttributeError(f"module 'syncperf' has no attribute {name!r}")

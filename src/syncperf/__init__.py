"""syncperf: observability for the sync endpoints of offline-first backends."""

from syncperf._config import Config, configure
from syncperf._decorators import Adapter, instrument_sync
from syncperf._operation import SyncOperation, current_operation, sync_operation
from syncperf._runtime import force_flush
from syncperf.exceptions import ConfigError, MeasurementError, SyncPerfError

__version__ = "0.1.0"

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

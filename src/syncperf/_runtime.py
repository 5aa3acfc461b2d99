"""The precomputed hot-path state built from a ``Config``: instruments, bounds, tracing.

One ``Runtime`` is current at a time (``current()``); ``configure()`` and
``testing.capture()`` swap it. Code on the request path reads the module global once per
operation and then only touches pre-bound series cached on the runtime.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from syncperf._accel import InFlight, in_flight
from syncperf._config import Config
from syncperf._forklocks import renew_in_child
from syncperf._gate import raised_at
from syncperf._guard import OTHER as OTHER
from syncperf._guard import Bounded as Bounded
from syncperf._guard import Guard
from syncperf._metrics import catalogue
from syncperf._metrics.aggregates import HistogramSeries, Registry, SumSeries
from syncperf._metrics.bounded import FLUSH, Deadline, run_bounded
from syncperf._metrics.catalogue import BATCH_BOUNDS as BATCH_BOUNDS
from syncperf._metrics.catalogue import DURATION_BOUNDS as DURATION_BOUNDS
from syncperf._metrics.outputs import FLUSHES, OUTPUTS, Feeds
from syncperf._metrics.reader import PeriodicExporter, Reader
from syncperf._metrics.resources import resource_of, syncperf_scope
from syncperf._replaced import RETIRING, replaced_by
from syncperf._replaced import retire as _retire
from syncperf._tracing.finisher import SpanFinisher
from syncperf._tracing.sampling import Tracing
from syncperf.exceptions import ConfigError

if TYPE_CHECKING:
    from syncperf._series import OperationSeries

_logger = logging.getLogger("syncperf")
T = TypeVar("T")

RUNTIME_HOOKS: list[Callable[[Runtime], None]] = []
"""Called with every new ``Runtime`` (e.g. to register an integration's gauge callbacks)."""
SHUTDOWN_HOOKS: list[Callable[[Runtime], None]] = []
"""Called with every ``Runtime`` that shut down (outputs drop what they keep for it)."""


class Runtime(Guard):
    """Everything the request path needs, built once per configuration."""

    __slots__ = ("successor",)  # read by every operation's end: a slot is read fastest
    capture: Any = None
    """The ``testing.Capture`` this runtime records for (``install`` leaves it current)."""
    successor: Runtime | None
    """The runtime in force after ``configure()`` replaced this one (``_fold.forward``)."""
    closed = False
    """Shut down (``shutdown``): outputs keep nothing more for it."""
    db_instrumented: ClassVar[int] = 0
    """Engines ``syncperf.sqlalchemy`` instruments (class-wide; ``note_database_instrumented``)."""

    def __init__(self, config: Config, *, shared_outputs: bool = True) -> None:
        """Build the runtime; ``shared_outputs=False`` (``testing.capture()``) feeds only the
        config's own outputs, not those the set-ups added."""
        self.successor, self.config, self.enabled = None, config, config.enabled
        self.strict = config.strict
        self.registry = Registry()
        self.registry.on_gauge_error = self._gauge_failed
        self.lock = self.registry.lock
        self._instruments(self.registry, config.max_series)
        self._caches(config)
        self._budget(config)
        self.tracing = Tracing(
            config.tracer_provider, config.trace_sample_rate, self.finisher, self.internal_error
        )
        self.resource = config.resource or resource_of(self.tracing.tracer)
        self.scope = syncperf_scope()
        self.feeds = Feeds(
            self._periodic,
            self.reader,
            shared=shared_outputs,
            idle=self.idle,
            timeout=config.shutdown_timeout,
        )
        self.exporters = self.feeds.exporters
        self.prometheus = self.feeds.prometheus
        """``(registry, collector)`` pairs this runtime feeds."""
        try:
            self.sync_outputs()
        except BaseException:  # a refused output: nothing of this runtime is left running
            self.feeds.abandon()
            raise
        self._hooks(RUNTIME_HOOKS)  # integrations register per-runtime gauges

    def _instruments(self, registry: Registry, limit: int) -> None:
        """The core instruments (at most ``limit`` series each)."""
        self.duration = catalogue.SYNC_OPERATION_DURATION.create(registry, max_series=limit)
        self.batch_size = catalogue.SYNC_BATCH_SIZE.create(registry, max_series=limit)
        self.items = catalogue.SYNC_ITEMS.create(registry, max_series=limit)
        self.conflicts = catalogue.SYNC_CONFLICTS.create(registry, max_series=limit)
        self.idempotency = catalogue.SYNC_IDEMPOTENCY_HITS.create(registry, max_series=limit)
        self.active = catalogue.SYNC_OPERATIONS_ACTIVE.observe(
            registry, self._observe_active, max_series=limit
        )
        self.db_queries = catalogue.SYNC_DB_QUERIES.create(registry, max_series=limit)
        self.db_duration = catalogue.SYNC_DB_DURATION.create(registry, max_series=limit)
        self.overhead = catalogue.SYNCPERF_OVERHEAD.create(registry, max_series=limit)
        self.dropped = catalogue.SYNCPERF_DROPPED.create(registry, max_series=limit)
        self.shed = catalogue.SYNCPERF_SHED.create(registry, max_series=limit)
        self.export_failures = catalogue.SYNCPERF_EXPORT_FAILURES.create(registry, max_series=limit)

    def _caches(self, config: Config) -> None:
        """The bounded names and the pre-bound series (``op_series``: ``_series.series()``'s)."""
        self.entities = Bounded(config.max_entities, config.entities)
        self.error_types = Bounded(100, overflow="_OTHER")
        self.resolutions = Bounded(20)
        self.op_series: dict[tuple[str, str | None], OperationSeries] = {}
        self.conflict_series: dict[tuple[str | None, str | None], SumSeries] = {}
        self.inflight: dict[str, InFlight] = {}
        """In-flight operations per name (``sync.operations.active``), and ``ended``: what ended
        operations recorded, for ``_fold.fold``. Appends and pops are atomic: no lock."""
        self.overhead_series: dict[str, HistogramSeries] = {}
        self.ended: deque[Any] = self.registry.pending
        self._state: dict[object, Any] = {}
        self._state_lock = threading.RLock()  # a factory may bind series under ``lock``
        self._logged: set[str] = set()
        self.retired: list[Runtime] = []
        """Replaced runtimes with operations open or queued (``_fold.adopt`` takes them)."""

    def _budget(self, config: Config) -> None:
        """The overhead budget and the span finisher it watches."""
        self.budget_ns = int(config.overhead_budget * 1e9)
        self.cooldown_ns = int(config.shed_cooldown * 1e9)
        self.slow_ns = int(config.slow_threshold * 1e9)
        self.shed_until = 0
        self.flush_timed_out = False
        self.streaks = {}
        self.finisher = SpanFinisher(
            lambda: self.over_budget("slow_span_end"),
            # a span end is timed in CPU time: a fast one also tells that slow span starts
            # (wall-clock time, GIL waits included) were the application's threads, not ours
            lambda: self.within_budget("slow_span_end", "slow_span_start"),
            self._late_queue_full,
            self.budget_ns,
            config.span_queue_size,
            self._span_end_failed,
            self._spans_not_ended,
            timeout=config.shutdown_timeout,
        )

    def _late_queue_full(self, stalled: bool) -> None:
        """A full span queue counts in the current runtime (a replaced one's outputs are gone)."""
        (installed or self)._span_queue_full(stalled)

    # --- outputs -------------------------------------------------------------------------

    @property
    def prometheus_registry(self) -> Any:
        """The first ``prometheus_client`` registry syncperf's metrics are served from."""
        return self.prometheus[0][0] if self.prometheus else None

    def sync_outputs(self, timeout: float | None = None) -> None:
        """Feed exactly the config's outputs plus ``OUTPUTS`` (see ``Feeds.sync``; exporters
        no longer fed get ``timeout`` seconds, default ``shutdown_timeout``, to stop)."""
        self.feeds.sync(self.config.metric_exporters, self.config.prometheus, timeout)

    def _periodic(self, exporter: Any) -> PeriodicExporter:
        config = self.config
        return PeriodicExporter(
            self.registry, exporter, self.resource, self.scope, interval=config.export_interval,
            timeout=config.export_timeout, on_failure=self._export_failed,
        )  # fmt: skip

    # --- per-runtime state of integrations ------------------------------------------------

    def state(self, factory: Callable[[Runtime], T], key: object = None) -> T:
        """This runtime's one ``factory(self)`` (one per ``key`` when given): an integration's
        pre-bound series and stores, made on first use and dropped with the runtime, so
        ``configure()`` and ``capture()`` start them afresh.

        Args:
            factory: Builds the state (a class taking the runtime); it is also the key.
            key: Tells apart several states of one factory (e.g. one per engine). With a key,
                a bound method of the owner may be the factory: the slot keeps the method's
                function, never the owner, so the runtime does not keep owners alive.
        """
        slot = factory if key is None else (getattr(factory, "__func__", factory), key)
        found = self._state.get(slot)
        if found is None:
            with self._state_lock:
                found = self._state.get(slot)
                if found is None:
                    found = self._state[slot] = factory(self)
        return found

    def peek(self, factory: Callable[[Runtime], T], key: object = None) -> T | None:
        """The state ``state(factory, key)`` made, or None (none is made here)."""
        slot = factory if key is None else (getattr(factory, "__func__", factory), key)
        return self._state.get(slot)

    def forget(self, factory: Callable[[Runtime], Any], key: object = None) -> Any:
        """Remove and return the state ``state(factory, key)`` made, or None."""
        with self._state_lock:
            slot = factory if key is None else (getattr(factory, "__func__", factory), key)
            return self._state.pop(slot, None)

    # --- cached series -------------------------------------------------------------------

    def inflight_for(self, operation: str) -> InFlight:
        """The in-flight count of ``operation``."""
        found = self.inflight.get(operation)
        return found if found is not None else self.inflight.setdefault(operation, in_flight())

    def idle(self) -> bool:
        """No operation of this runtime is open (each records into it when it ends)."""
        return not any(list(self.inflight.values()))

    def in_force(self) -> Runtime:
        """This runtime, or the one that replaced it (``successor``), whichever is in force."""
        return self if self.successor is None else self.successor.in_force()

    def _observe_active(self) -> list[tuple[dict[str, str | bool], float]]:
        """In flight per operation name: this runtime's and the open ones of the runtimes it
        replaced (begun before ``configure()``, they end in the runtime that began them)."""
        counts = {name: len(inflight) for name, inflight in list(self.inflight.items())}
        for rt in replaced_by(self):
            for name, inflight in list(rt.inflight.items()):
                if inflight:  # (not its idle names: whether it is alive is the collector's)
                    counts[name] = counts.get(name, 0) + len(inflight)
        return [({"sync.operation": name}, n) for name, n in counts.items()]

    def overhead_for(self, component: str) -> HistogramSeries:
        """The ``syncperf.overhead`` series of ``component``."""
        found = self.overhead_series.get(component)
        if found is None:
            with self.lock:
                found = self.overhead_series[component] = self.overhead.histogram(
                    (("syncperf.component", component),)
                )
        return found

    # --- life cycle ----------------------------------------------------------------------

    def reader(self) -> Reader:
        """A new cumulative reader of this runtime's aggregates."""
        return Reader(self.registry, self.resource, self.scope)

    def flush(self, timeout: float | None = None) -> bool:
        """End queued spans, flush the tracer provider they go to and export metrics now (with
        ``PROMETHEUS_MULTIPROC_DIR``, write this worker's multiprocess files first).

        Waits at most ``timeout`` seconds (default ``config.shutdown_timeout``): the work runs
        on a daemon thread, so a collector that accepts and never answers cannot hold the
        caller (or the process's exit) longer. In an exit hook on Python 3.12, which starts no
        thread, it runs on the caller's, each step given what is left of the bound. True when
        everything finished in time and succeeded: False when an export or a provider's flush
        failed, or flushing raised.
        """
        limit = self.config.shutdown_timeout if timeout is None else timeout
        left = Deadline(limit).left
        succeeded: list[bool] = []
        # Here first: local files, written in milliseconds whatever the collectors do.
        wrote = self.feeds.write_files()  # the writes catch their own errors

        def work() -> None:
            try:
                ok = self.finisher.flush(timeout=left()) and wrote
                provider = self.tracing.provider
                if provider is not None:
                    ok = provider.force_flush(int(left() * 1000)) is not False and ok  # None: ok
                for exporter in self.exporters:
                    ok = exporter.export_once(timeout=left()) and ok
                for extra in tuple(FLUSHES):
                    ok = extra(int(left() * 1000)) is not False and ok
                succeeded.append(ok)
            except Exception as error:  # never raise into the caller (an exit hook, a lifespan)
                _logger.warning("syncperf: flushing telemetry failed: %s", raised_at(error))

        self.flush_timed_out = not run_bounded(work, limit, FLUSH, alone=self)
        if not self.flush_timed_out:
            return succeeded == [True]
        self.log_once(
            "flush_timeout",
            "syncperf: flushing telemetry took longer than %.1f s (is the collector "
            "answering?); what was not exported by then is lost",
            limit,
        )
        return False

    def shutdown(self, keep: tuple[Any, ...] = ()) -> None:
        """Flush, stop exporters and threads, and unregister the Prometheus collector, holding
        the caller at most ``shutdown_timeout`` in all.

        Queued spans get the bound to end (what a blocked span processor keeps longer is
        dropped and counted: ``span_end_timeout``), the exporters what is left of it for their
        last export and shutdown (what they have not done by then goes on in the background).
        Exporter objects in ``keep`` (reused by the next runtime) and those of ``OUTPUTS`` get
        a last export but are not shut down.
        """
        left = Deadline(self.config.shutdown_timeout).left
        self.finisher.shutdown(self.config.shutdown_timeout)
        self.feeds.shutdown(keep, timeout=left())
        self.closed = True  # before the hooks: an output that checks it adds nothing after
        self._hooks(SHUTDOWN_HOOKS)

    def _hooks(self, hooks: list[Callable[[Runtime], None]]) -> None:
        for hook in tuple(hooks):
            try:
                hook(self)
            except Exception as error:
                _logger.warning("syncperf: a runtime hook failed: %s", raised_at(error))


def note_database_instrumented(delta: int) -> None:
    """A database integration instrumented (``+1``) or released (``-1``) an engine: while any
    engine is instrumented, every sync operation reports ``sync.db.queries`` and
    ``sync.db.duration``, zeros included (``Runtime.db_instrumented``)."""
    with _db_lock:
        Runtime.db_instrumented += delta


_db_lock = threading.Lock()
installed: Runtime | None = None
"""The runtime in force, or None before the first use: integrations read it on their hot path
as ``installed or current()`` (one global read instead of a call)."""
_install_lock = threading.Lock()
renew_in_child(sys.modules[__name__], "_install_lock")  # held while the first use builds one


def current() -> Runtime:
    """The active runtime, configured from the environment on first use."""
    global installed
    rt = installed
    if rt is None:
        with _install_lock:
            if installed is None:
                installed = Runtime(_config_from_env())
            rt = installed
    return rt


def _config_from_env() -> Config:
    """The environment's config; a bad variable is logged and its default used (request path)."""
    return Config.from_env(lenient=True)


def install(config: Config) -> Runtime:
    """Build a runtime for ``config`` and make it current (the previous one shuts down); in a
    ``testing.capture()`` still open, whose runtime stays current, only note ``config`` on it
    (also one that began while this runtime was built: then it shuts down unused)."""
    keep = (*config.metric_exporters, *OUTPUTS.exporters.values())
    with RETIRING:
        if not _captured(held := installed):
            held = replace(rt := Runtime(config), unless_captured=True)
            if not _captured(held):
                if held is not None and held.capture is None:  # a capture shuts its own down
                    _retire(held, rt)
                    held.shutdown(keep=keep)
                return rt
            rt.shutdown(keep=keep)
    assert held is not None and held.capture is not None
    held.capture.configured.append(config)
    return held


def _captured(rt: Runtime | None) -> bool:
    return rt is not None and rt.capture is not None and not rt.capture.closed


def configure(config: Config | None = None, **options: Any) -> Config:
    """Install syncperf's settings and return the active config.

    Call it once at start-up, after your OpenTelemetry providers are set up. Without a call,
    the first sync operation configures syncperf from the environment. Calling it again
    replaces the settings (exporters get a last export, pull outputs' counts go on); inside
    ``testing.capture()`` it checks them and notes them on the capture, which stays in force.

    Args:
        config: A complete ``Config``; ``options`` may not be combined with it.
        **options: Any ``Config`` field, applied over ``Config.from_env()``.

    Raises:
        ConfigError: an option has a value syncperf does not accept.
    """
    if config is not None and options:
        raise ConfigError("config", config, "either a Config or keyword options, not both")
    if config is not None and not isinstance(config, Config):
        raise ConfigError("config", config, "a syncperf.Config")
    active = config or Config.from_env(**options)
    install(active)
    return active


def replace(
    rt: Runtime | None, only: Runtime | None = None, unless_captured: bool = False
) -> Runtime | None:
    """Make ``rt`` current without shutting anything down; return the previous runtime. Given
    ``only``: only if ``only`` is the one current (an ending capture's; else nothing changes);
    ``unless_captured``: not if the current one is an open capture's."""
    global installed
    with _install_lock:
        previous = installed
        if (only is None or previous is only) and not (unless_captured and _captured(previous)):
            installed = rt
    return previous


def force_flush(timeout: float | None = None) -> bool:
    """Export what syncperf recorded so far: end queued spans, flush the tracer provider they
    go to, and export metrics now.

    Call it from shutdown hooks that run before the process exits (a lifespan shutdown
    handler, gunicorn's ``worker_exit``, a serverless handler's end); ``SyncPerfMiddleware``
    already does on the ASGI lifespan shutdown, and syncperf does at interpreter exit.

    Args:
        timeout: Seconds to wait at most (default: the ``shutdown_timeout`` setting, 5 s).

    Returns:
        True when everything was exported in time; False when an export or a provider's
        flush failed, or ran out of time.
    """
    rt = installed
    return True if rt is None else rt.flush(timeout)

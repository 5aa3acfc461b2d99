"""Where a runtime's metrics go: periodic exporters and ``prometheus_client`` registries.

``OUTPUTS`` holds the outputs the set-ups added (``syncperf.export``); every runtime feeds
them besides its config's own, so set-ups compose in any order and repeat harmlessly.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any

from syncperf._gate import raised_at
from syncperf._metrics import multiprocess
from syncperf._metrics.bounded import Deadline, run_bounded
from syncperf._metrics.prometheus import SyncPerfCollector
from syncperf._metrics.reader import PeriodicExporter, Reader

_logger = logging.getLogger("syncperf")
FLUSHES: list[Callable[[int], object]] = []
"""More flushes for ``Runtime.flush`` (called with the milliseconds left), e.g. the SDK meter
provider that ``setup_otlp`` built for other instrumentation."""


CARRIES: list[Callable[[Any, Any], None]] = []
"""Called by ``carry`` with the replaced runtime and its successor: outputs fed besides the
runtime's own (``export._bridge``) continue what the replaced one counted."""


def carry(previous: Any, rt: Any) -> None:
    """``rt``, which replaced ``previous`` (``configure()``), continues in each output both
    feed what ``previous`` counted and had not handed out (its readers' last collection):
    a pull output's counters never go back, nor lose what ended before the swap."""
    for hook in (lambda old, new: new.feeds.carry(old.feeds), *CARRIES):
        try:
            hook(previous, rt)
        except Exception as error:  # never into a configure()
            _logger.warning(
                "syncperf: carrying counts to a new configuration failed: %s", raised_at(error)
            )


_entries: weakref.WeakKeyDictionary[Any, Callable[[int], object]] = weakref.WeakKeyDictionary()
"""The ``FLUSHES`` entry of each provider, to drop it when the provider is shut down."""


def flush_also(provider: Any) -> None:
    """Add ``provider.force_flush`` to ``FLUSHES``, held weakly: the entry drops out when the
    provider is gone (or shut down, ``flush_no_more``), so repeated set-ups keep it bounded."""

    def entry(ms: int) -> object:
        method = flush()
        return method is None or method(ms)

    def gone(_: object, flushes: list[Callable[[int], object]] = FLUSHES) -> None:
        try:  # no module global: this also runs at interpreter exit, when they are None
            flushes.remove(entry)
        except ValueError:  # already dropped
            return

    flush = weakref.WeakMethod(provider.force_flush, gone)
    FLUSHES.append(entry)
    _entries[provider] = entry


def flush_no_more(provider: Any) -> None:
    """Drop the ``FLUSHES`` entry of ``provider`` (being shut down: nothing left to flush)."""
    entry = _entries.pop(provider, None)
    if entry is not None:
        _drop(entry)


def _drop(entry: Callable[[int], object]) -> None:
    with contextlib.suppress(ValueError):  # already dropped, or a test swapped the list
        FLUSHES.remove(entry)


class Outputs:
    """Outputs the set-ups added: every runtime feeds them, and a new configuration keeps
    them."""

    def __init__(self) -> None:
        self.exporters: dict[str, Any] = {}
        """Metric exporters by the name of the set-up that owns them (``"otlp"``)."""
        self.registries: list[Any] = []
        """``prometheus_client`` registries serving syncperf's metrics."""


OUTPUTS = Outputs()
_lock = threading.RLock()


class Feeds:
    """The outputs one runtime feeds, kept equal to what it is asked to feed."""

    def __init__(
        self,
        periodic: Callable[[Any], PeriodicExporter],
        reader: Callable[[], Reader],
        *,
        shared: bool = True,
        idle: Callable[[], bool] = lambda: True,
        timeout: float = 5.0,
    ) -> None:
        self._periodic = periodic
        self._reader = reader
        self._idle = idle
        """Whether the runtime has no open operation (a multiprocess writer's last write)."""
        self._timeout = timeout
        """Seconds exporters that are stopped get for their last export and shutdown, in all
        (``shutdown_timeout``)."""
        self._shared = shared
        self.exporters: list[PeriodicExporter] = []
        self.prometheus: list[tuple[Any, Any]] = []
        """``(registry, collector)`` pairs."""
        self.writer: multiprocess.MultiprocessWriter | None = None
        """Multiprocess mode: the writer of this process's files, one for every registry
        (made with the first, closed with the runtime)."""

    def sync(
        self, exporters: tuple[Any, ...], prometheus: Any, timeout: float | None = None
    ) -> None:
        """Feed exactly ``exporters`` and the ``prometheus`` registry (``True``: the default
        one) plus ``OUTPUTS``: start what is missing, stop what is gone (each exporter and
        registry once, however often it was named; stopped exporters get ``timeout`` seconds,
        default ``shutdown_timeout``, for their last export and shutdown)."""
        shared = OUTPUTS if self._shared else Outputs()
        stopped: list[PeriodicExporter] = []
        with _lock:
            registries = [_registry(prometheus)] if prometheus else []
            registries = _unique([*registries, *shared.registries])
            for registry in registries:  # a refused registry raises before anything changes
                if not any(p[0] is registry for p in self.prometheus):
                    check(registry)
            wanted = _unique([*exporters, *shared.exporters.values()])
            for periodic in [p for p in self.exporters if not _has(wanted, p.exporter)]:
                self.exporters.remove(periodic)
                stopped.append(periodic)
            for exporter in wanted:
                if not any(p.exporter is exporter for p in self.exporters):
                    self.exporters.append(self._periodic(exporter))
            for pair in [p for p in self.prometheus if not _has(registries, p[0])]:
                self.prometheus.remove(pair)
                unregister(*pair)
            for registry in registries:
                if not any(p[0] is registry for p in self.prometheus):
                    if multiprocess.directory() is None:
                        collector = register(self._reader(), registry)
                    else:
                        collector = self._serve_files(registry)
                    self.prometheus.append((registry, collector))
        self._stop([(p, True) for p in stopped], self._timeout if timeout is None else timeout)

    def carry(self, previous: Feeds) -> None:
        """Continue the counts of ``previous`` (a replaced runtime's) in the registries both
        serve (multiprocess mode continues them in the files: ``multiprocess._Sums``), and
        in the exporters both feed when the old one's last export fails
        (``_hand_over``)."""
        for periodic in self.exporters:
            for old in previous.exporters:
                if old.exporter is periodic.exporter and old.hand_over is None:
                    old.hand_over = functools.partial(_hand_over, old, periodic)
                    periodic.after = old.settled
        for registry, collector in self.prometheus:
            if not isinstance(collector, SyncPerfCollector):
                continue
            for served, old in previous.prometheus:
                if served is registry and isinstance(old, SyncPerfCollector):
                    collector.reader.carry(old.reader)

    def _serve_files(self, registry: Any) -> Any:
        """Multiprocess mode: have ``registry`` serve every worker's files, this process's
        written by the runtime's one writer (started with the first registry)."""
        from syncperf._metrics import multiprocess_group

        writer = self.writer or multiprocess.MultiprocessWriter(self._reader(), self._idle)
        try:
            serving = multiprocess_group.register(writer, registry)
        except BaseException:
            if writer is not self.writer:
                writer.finish()
            raise
        if self.writer is None:
            self.writer = writer
            writer.start()
        return serving

    def write_files(self) -> bool:
        """Write this process's multiprocess files now (``multiprocess``), replaced runtimes'
        open operations included; False when a write failed."""
        ok = self.writer is None or self.writer.write()
        return multiprocess.drain() and ok

    def _close_writer(self) -> None:
        """Retire the writer: it writes until the runtime's open operations have ended."""
        writer, self.writer = self.writer, None
        if writer is not None:
            writer.close()

    def shutdown(self, keep: tuple[Any, ...] = (), timeout: float | None = None) -> None:
        """Unregister collectors and stop exporters (within ``timeout`` seconds, default
        ``shutdown_timeout``). Exporter objects in ``keep`` (reused by the next runtime) and
        those of ``OUTPUTS`` get a last export but are not closed."""
        for registry, collector in self.prometheus:  # local and quick: first
            unregister(registry, collector)
        self.prometheus.clear()
        self._close_writer()
        shared = tuple(OUTPUTS.exporters.values())  # closed only by the set-up that owns them
        closing = [(p, not _has((*keep, *shared), p.exporter)) for p in self.exporters]
        self._stop(closing, self._timeout if timeout is None else timeout)

    def abandon(self) -> None:
        """Undo ``sync`` for a runtime that is not installed (it raised): stop its exporters
        with no export and without closing them (the running configuration may use them),
        unregister its collectors."""
        for periodic in self.exporters:
            periodic.shutdown(flush=False, close=False, timeout=1.0)  # its thread ends
        self.exporters.clear()
        for registry, collector in self.prometheus:
            unregister(registry, collector)
        self.prometheus.clear()
        self._close_writer()

    def _stop(self, exporters: list[tuple[PeriodicExporter, bool]], timeout: float) -> None:
        """Shut ``(exporter, close)`` pairs down, holding the caller at most ``timeout``
        seconds in all: an exporter whose collector never answers, or which does not honour
        its timeouts, goes on in the background (what it had not exported is lost)."""
        if not exporters:
            return
        left = Deadline(timeout).left

        def work() -> None:
            for periodic, close in exporters:
                try:
                    periodic.shutdown(close=close, timeout=left())
                except Exception as error:  # never into a configure() or a shutdown
                    _logger.debug(
                        "syncperf: stopping a metric exporter failed: %s", raised_at(error)
                    )

        if not run_bounded(work, timeout, "syncperf-metric-shutdown"):
            _logger.warning(
                "syncperf: the metric exporters did not stop within %.1f s (is the collector "
                "answering?); they go on in the background",
                timeout,
            )


def _hand_over(old: PeriodicExporter, new: PeriodicExporter) -> None:
    """``old``'s last export failed: ``new``'s stream goes on with its reader's totals
    (cumulative: all of them, under their start time), unless ``new`` has exported already
    (they would count twice): then they are lost, and said so."""
    if new.exported:
        _logger.warning(
            "syncperf: the last metric export of a replaced configuration failed; what it"
            " recorded since its last export is lost"
        )
        return
    try:
        new.reader.carry(old.reader)
    except Exception as error:  # never into a configure()
        _logger.warning(
            "syncperf: carrying counts to a new configuration failed: %s", raised_at(error)
        )


def check(registry: Any, option: str = "prometheus") -> None:
    """Raise ``ConfigError`` when ``register`` would refuse ``registry`` (multiprocess mode:
    the global registry, a missing directory); ``option``: the argument that named it."""
    if multiprocess.directory() is not None:
        from syncperf._metrics import multiprocess_group

        multiprocess_group.check(registry, option)


def register(reader: Reader, registry: Any) -> SyncPerfCollector:
    """Serve ``reader``'s metrics from ``registry``; return the collector (multiprocess mode:
    ``Feeds._serve_files`` instead)."""
    collector = SyncPerfCollector(reader)
    try:
        collector.register(registry)
    except BaseException:  # a clashing name: the reader is fed no more
        collector.close()
        raise
    return collector


def unregister(registry: Any, collector: Any) -> None:
    """Undo ``register`` (or ``Feeds._serve_files``)."""
    with contextlib.suppress(KeyError):  # already gone (the application cleared it)
        registry.unregister(collector)
    if not isinstance(collector, SyncPerfCollector):
        from syncperf._metrics import multiprocess_group

        multiprocess_group.unregister(registry, collector)
    collector.close()


def _unique(items: list[Any]) -> list[Any]:
    found: list[Any] = []
    for item in items:
        if not _has(found, item):
            found.append(item)
    return found


def _has(items: Any, item: Any) -> bool:
    return any(i is item for i in items)


def _registry(target: Any) -> Any:
    if target is True:
        from prometheus_client import REGISTRY

        return REGISTRY
    return target

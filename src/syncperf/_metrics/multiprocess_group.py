"""The group's side of multiprocess mode (``multiprocess``): the collector that reads every
worker's files for a scrape, and the registration of a worker's writer beside it (checked
first, undone when it fails).

Imported only in multiprocess mode: it needs ``prometheus_client``.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import weakref
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.multiprocess import MultiProcessCollector

from syncperf._metrics import multiprocess_compact, multiprocess_sum
from syncperf._metrics.catalogue import METRICS
from syncperf._metrics.multiprocess import MultiprocessWriter, _values, directory
from syncperf._metrics.multiprocess_compact import compact, readable, shared
from syncperf.exceptions import ConfigError

_owners = threading.Lock()
"""Held while a ``MultiProcessCollector`` is registered or handed over."""


def check(registry: Any, option: str = "prometheus") -> None:
    """Raise ``ConfigError`` unless syncperf can serve ``registry`` (named by ``option``) from
    the files in the multiprocess directory.

    prometheus_client's global ``REGISTRY`` is refused: it already holds the process's own
    metrics, which a ``MultiProcessCollector`` there repeats (or, with an application metric
    registered first, refuses as ``DuplicateTimeseries``); prometheus_client prescribes a
    registry of its own for the collector.
    """
    if registry is REGISTRY:
        raise ConfigError(
            option,
            registry,
            "a registry of its own in multiprocess mode (PROMETHEUS_MULTIPROC_DIR is set), "
            "e.g. CollectorRegistry(): the global REGISTRY already serves this process's "
            "own metrics, which the multiprocess collector would repeat",
        )
    path = directory() or ""
    if not os.path.isdir(path):
        raise ConfigError(
            "PROMETHEUS_MULTIPROC_DIR",
            path,
            "an existing directory (create it, empty, before the server starts)",
        )


class Collector(MultiProcessCollector):
    """Every worker's files, less syncperf's gauges no longer observed (written as NaN), read under
    the directory's shared lock (``multiprocess_compact``): a fold of the files of workers
    that are gone never runs during the read. Each counter, histogram and summary sample is
    the exact sum of its values across the files (``multiprocess_sum``), so it is the same in
    any listing order and after any fold; a file that cannot be read is left out."""

    @staticmethod
    def merge(files: Any, accumulate: bool = True) -> Any:
        return multiprocess_sum.merge(files, accumulate, multiprocess_compact._report)

    def collect(self) -> Iterator[Any]:
        path: str = self._path
        for attempt in range(3):
            with shared(path) as held:
                try:
                    families = self.merge(readable(path))
                    break
                except FileNotFoundError:  # without the lock: a file folded meanwhile
                    if held or attempt == 2:
                        raise
        for family in families:
            if family.type == "gauge" and family.name in _OWN_GAUGES:
                family.samples = [s for s in family.samples if not math.isnan(s.value)]
                if not family.samples:
                    continue
            yield family  # an application's gauges as prometheus_client serves them, NaN too


_OWN_GAUGES = frozenset(m.prometheus for m in METRICS if m.kind == "gauge")
"""syncperf's gauges, whose NaN marks a series no longer observed (``multiprocess``)."""


class Serving:
    """``writer``'s place in one served ``registry``: registered before the
    ``MultiProcessCollector``, its ``collect`` has the writer write this worker's totals
    (and yields nothing) just before the files are read; when that collector is syncperf's
    own (``added``), which reads under the lock, it folds the files of workers that are gone
    first (``multiprocess_compact``). An application's own collector takes no lock: a fold
    could remove a file between its listing and its read, so none runs."""

    def __init__(self, writer: MultiprocessWriter, registry: Any) -> None:
        self.writer = writer
        self.registry = registry
        self.added: Any = None
        """The ``MultiProcessCollector`` this registration is in charge of (None: another
        one or the application is)."""
        _servings.add(self)

    def describe(self) -> list[Any]:
        """No up-front description."""
        return []

    def collect(self) -> Iterator[Any]:
        self.writer.collect()
        if self.added is not None:  # read by the ``Collector`` alone
            fold_dead()
        return iter(())

    def close(self) -> None:
        """Nothing to stop: the writer is its runtime's (``Feeds``)."""
        _servings.discard(self)


_servings: weakref.WeakSet[Serving] = weakref.WeakSet()


def register(writer: MultiprocessWriter, registry: Any) -> Serving:
    """Make ``registry`` serve every worker's files, ``writer`` writing this worker's first.

    Raises:
        ConfigError: ``registry`` or the directory cannot serve the files (``check``); then
            nothing is left registered.
    """
    check(registry)
    serving = Serving(writer, registry)
    try:
        with _owners:
            collectors = getattr(registry, "_collector_to_names", {})
            found = [c for c in list(collectors) if isinstance(c, MultiProcessCollector)]
            added = None if found else Collector(None)  # type: ignore[no-untyped-call]
            registry.register(serving)
            if added is not None:  # after the writer: it reads the files once written
                _add(registry, added, serving)
            for collector in found:  # the application's (or an older runtime's): it reads
                _move_last(registry, collector)  # the files once written, not before
    except BaseException:
        with contextlib.suppress(KeyError):
            registry.unregister(serving)
        serving.close()
        raise
    return serving


def _add(registry: Any, collector: Any, serving: Serving) -> None:
    """Register ``collector``, which ``serving`` is then in charge of."""
    try:
        registry.register(collector)
    except ValueError as error:  # DuplicateTimeseries: the registry has the files' metrics
        raise ConfigError(
            "prometheus",
            registry,
            f"a registry without this process's own metrics in multiprocess mode ({error})",
        ) from None
    serving.added = collector
    serving.writer.between = fold_dead


def fold_dead() -> None:
    """Fold the files of workers that are gone (``multiprocess_compact``; never raises): at a
    scrape, and once a second on the writer's thread, so the folds keep up with recycles
    however rarely the group is scraped."""
    path = directory()
    if path is not None:
        compact(path, _values())


def unregister(registry: Any, serving: Serving) -> None:
    """Undo ``register``: the ``MultiProcessCollector`` it added passes to another
    registration in ``registry`` (the next runtime's), or is unregistered when none is left."""
    with _owners:
        added, serving.added = serving.added, None
        if added is None:
            return
        for heir in list(_servings):
            if heir is not serving and heir.registry is registry and not heir.writer.retired:
                heir.added = added
                heir.writer.between = fold_dead
                _move_last(registry, added)
                return
        with contextlib.suppress(KeyError):  # already gone (the application cleared it)
            registry.unregister(added)


def _move_last(registry: Any, collector: Any) -> None:
    """Put ``collector`` after the others in ``registry``'s order: the heir writer, registered
    after it, writes its files before a scrape reads them."""
    lock, order = getattr(registry, "_lock", None), getattr(registry, "_collector_to_names", None)
    if lock is None or not isinstance(order, dict):
        registry.unregister(collector)
        registry.register(collector)
        return
    with lock:  # in one step: no scrape sees the registry without it
        order[collector] = order.pop(collector)


def _after_fork_in_child() -> None:
    global _owners
    _owners = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

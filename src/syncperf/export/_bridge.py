"""syncperf's aggregates as an extra producer of an SDK ``MeterProvider``'s readers.

The OpenTelemetry specification's answer is a ``MetricProducer`` registered on each
``MetricReader``; the Python SDK does not have one yet (opentelemetry-python #4768), so a
bridge does what the SDK's own collection will do with producers: each reader's collect
callback (the provider's ``MeasurementConsumer.collect``, handed to the reader by the
provider through ``MetricReader._set_collect_callback``) is wrapped so that what the
provider collected is returned together with syncperf's metrics, read at that reader's
temporality by a syncperf ``Reader`` of its own. Readers of any kind (periodic OTLP
exporters, ``PrometheusMetricReader``, in-memory readers) then see syncperf's metrics in
the same collection as the application's, and syncperf never records through the SDK's
synchronous instruments.

Wrapping twice is a no-op; the bridge follows ``configure()`` (a new runtime gets a new
syncperf reader, which continues the replaced one's: ``Bridge.carry``); a failing merge
returns the provider's own data.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricsData,
    ResourceMetrics,
)

from syncperf import _runtime
from syncperf._gate import raised_at
from syncperf._metrics import outputs
from syncperf._metrics.reader import CUMULATIVE, Reader

_logger = logging.getLogger("syncperf")
_MARK = "__syncperf_bridge__"
_KINDS = {"_Counter": "counter", "_Histogram": "histogram"}


def readers_of(provider: Any) -> list[Any]:
    """The metric readers registered on an SDK ``MeterProvider`` (constructor and
    ``add_metric_reader``)."""
    consumer = getattr(provider, "_measurement_consumer", None)
    storages = getattr(consumer, "_reader_storages", None)
    if isinstance(storages, dict):
        return list(storages)
    return list(getattr(provider, "_metric_readers", ()))


def temporality_of(sdk_reader: Any) -> dict[str, AggregationTemporality]:
    """The SDK reader's temporality per syncperf instrument kind."""
    preferred = getattr(sdk_reader, "_instrument_class_temporality", None) or {}
    by_name = {getattr(cls, "__name__", ""): t for cls, t in preferred.items()}
    return {kind: by_name.get(name, CUMULATIVE) for name, kind in _KINDS.items()}


class Bridge:
    """Feeds the current syncperf runtime's metrics to every reader of one provider."""

    def __init__(self, provider: Any) -> None:
        self._provider = weakref.ref(provider)  # ``_bridges`` holds this bridge, by provider
        self._lock = threading.Lock()
        self._readers: weakref.WeakKeyDictionary[Any, dict[int, Reader]] = (
            weakref.WeakKeyDictionary()
        )
        self._warned = False
        held: Any = _runtime.installed  # not ``current()``: bridging configures nothing
        self._capture = None if held is None else held.capture
        """The capture in force when the provider was bridged (a test's own provider reads
        the test's data, and that of a capture nested in it; the application's, bridged
        outside, never does)."""

    @property
    def provider(self) -> Any:
        """The bridged provider (None once it is gone)."""
        return self._provider()

    def attach(self) -> int:
        """Wrap the collect callback of each reader not wrapped yet; return how many
        readers the bridge feeds."""
        fed = 0
        for sdk_reader in readers_of(self.provider):
            inner = getattr(sdk_reader, "_collect", None)
            if inner is None:
                continue
            fed += 1
            if getattr(inner, _MARK, None) is not None:
                continue
            sdk_reader._set_collect_callback(self._wrap(inner))
        self.readers_for(_runtime.current())
        return fed

    def readers_for(self, rt: Any) -> dict[int, Reader]:
        """syncperf readers of ``rt``, one per SDK reader (made as soon as the runtime
        exists, so they see every drain of its aggregates)."""
        with self._lock:
            found = self._readers.get(rt)
            if rt.closed:  # shut down (``forget``): it holds no readers
                return found or {}
            if found is None:
                found = self._readers[rt] = {}
            provider = self.provider  # one shut down gets no new runtime's readers
            live = provider is not None and getattr(provider, "_shutdown", False) is not True
            for sdk_reader in readers_of(provider) if live else ():
                if id(sdk_reader) not in found:
                    found[id(sdk_reader)] = Reader(
                        rt.registry,
                        rt.resource,
                        rt.scope,
                        temporality_of(sdk_reader),
                        beside=provider,
                    )
            return found

    def forget(self, rt: Any) -> None:
        """``rt`` shut down: its readers close (each holds ``rt``, the key it is kept by)."""
        with self._lock:
            gone = self._readers.pop(rt, {})
        for reader in gone.values():
            reader.close()

    def carry(self, previous: Any, rt: Any) -> None:
        """Continue, in ``rt``'s reader of each SDK reader, what ``previous``'s (replaced)
        had not handed out: its next collection delivers it (``Reader.carry``)."""
        with self._lock:
            old = self._readers.pop(previous, None)
        if not old:
            return
        new = self.readers_for(rt)
        for key, reader in old.items():
            if key in new:
                new[key].carry(reader)
            else:  # an SDK reader gone since
                reader.close()

    def _wrap(self, inner: Any) -> Any:
        def collect(sdk_reader: Any, *args: Any, **kwargs: Any) -> Any:
            data = inner(sdk_reader, *args, **kwargs)
            try:
                return self.merge(sdk_reader, data)
            except Exception as error:
                if not self._warned:
                    self._warned = True
                    _logger.warning(
                        "syncperf: merging into a metric reader failed: %s", raised_at(error)
                    )
                return data

        setattr(collect, _MARK, self)
        return collect

    def _reads(self, cap: Any) -> bool:
        """Whether the capture in force is the one the provider was bridged in, or nested in
        it (``Capture.scope``): a test's own provider reads what its test records."""
        return self._capture is not None and self._capture.scope[-1] in cap.scope

    def merge(self, sdk_reader: Any, data: MetricsData | None) -> MetricsData | None:
        """``data`` with syncperf's metrics added as one more instrumentation scope."""
        rt: Any = _runtime.current()
        if rt.capture is not None and not self._reads(rt.capture):
            rt = rt.capture.outside  # a test's data stays out of the application's readers
        if rt is None or not rt.enabled:
            return data
        reader = self.readers_for(rt).get(id(sdk_reader))
        if reader is None:  # the provider shut down before it read this runtime
            return data
        ours = reader.collect()
        scopes = [
            scope
            for resource_metrics in ours.resource_metrics
            for scope in resource_metrics.scope_metrics
            if scope.metrics
        ]
        if not scopes:
            return data
        if data is None or not data.resource_metrics:
            resource = getattr(getattr(self.provider, "_sdk_config", None), "resource", None)
            return MetricsData(
                resource_metrics=[
                    ResourceMetrics(
                        resource=resource or rt.resource, scope_metrics=scopes, schema_url=""
                    )
                ]
            )
        first, *rest = data.resource_metrics
        merged = ResourceMetrics(
            resource=first.resource,
            scope_metrics=[*first.scope_metrics, *scopes],
            schema_url=first.schema_url,
        )
        return MetricsData(resource_metrics=[merged, *rest])


_bridges: weakref.WeakKeyDictionary[Any, Bridge] = weakref.WeakKeyDictionary()
_bridges_lock = threading.Lock()


def bridge(provider: Any) -> Bridge:
    """The one bridge of ``provider``, attached to its readers."""
    with _bridges_lock:
        found = _bridges.get(provider)
        if found is None:
            found = _bridges[provider] = Bridge(provider)
            # A flush for exit (the ASGI lifespan's, under uvicorn's SIGTERM) also collects
            # the provider's readers, which now carry syncperf's metrics.
            outputs.flush_also(provider)
    _register_hook()
    found.attach()
    return found


def _on_new_runtime(rt: Any) -> None:
    for found in list(_bridges.values()):
        found.readers_for(rt)


def _carry(previous: Any, rt: Any) -> None:
    for found in list(_bridges.values()):
        found.carry(previous, rt)


def _on_shutdown(rt: Any) -> None:
    for found in list(_bridges.values()):
        found.forget(rt)


def _register_hook() -> None:
    if _on_new_runtime not in _runtime.RUNTIME_HOOKS:
        _runtime.RUNTIME_HOOKS.append(_on_new_runtime)
        _runtime.SHUTDOWN_HOOKS.append(_on_shutdown)
    if _carry not in outputs.CARRIES:
        outputs.CARRIES.append(_carry)

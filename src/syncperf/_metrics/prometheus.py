"""A ``prometheus_client`` collector over syncperf's aggregates.

Names follow the OpenTelemetry-to-Prometheus translation of the OTLP spec (as the
collector's ``prometheus`` exporter and Prometheus's own OTLP receiver apply it): dots
become underscores, the unit becomes a suffix (``s`` -> ``_seconds``, ``By`` -> ``_bytes``,
``1`` -> ``_ratio``; ``{annotations}`` are dropped), counters end in ``_total``, and
attribute keys become label names with underscores.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import threading
import weakref
from collections.abc import Iterator
from typing import Any

from opentelemetry.sdk.metrics.export import Gauge, Histogram, Metric, Sum

from syncperf._metrics.exposition import Exposition, label_value, le_value
from syncperf._metrics.reader import Reader
from syncperf.exceptions import ConfigError

_UNITS = {"s": "seconds", "ms": "milliseconds", "By": "bytes", "1": "ratio"}
_INVALID = re.compile(r"[^a-zA-Z0-9_:]")


def prometheus_name(name: str, unit: str | None, *, counter: bool = False) -> str:
    """The Prometheus metric name for an OpenTelemetry metric (without ``_total``)."""
    base = _INVALID.sub("_", name)
    suffix = _UNITS.get(unit or "", "")
    if unit and not suffix and not unit.startswith("{"):
        suffix = _INVALID.sub("_", unit)
    if suffix and not base.endswith("_" + suffix):
        base = f"{base}_{suffix}"
    return base


def label_name(key: str) -> str:
    """A Prometheus label name for an attribute key."""
    return _INVALID.sub("_", key)


class SyncPerfCollector:
    """Yields syncperf's metrics on each scrape (cumulative, as Prometheus expects).

    ``prometheus_client``'s encoders get metric families from ``collect``; syncperf's own
    endpoints render the same bytes directly (``render``, see ``scrape``).
    """

    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        self.serial = next(_serials)
        """Later collectors (a later runtime's) replace earlier ones in a registry."""
        self.registry: Any = None
        """The registry this collector is registered in (set by ``register``)."""
        self.exposition = Exposition(reader, lambda i: prometheus_name(i.name, i.unit), label_name)

    def register(self, registry: Any) -> None:
        """Register in ``registry``; its scrapes by ``scrape`` take the direct path.

        Raises:
            ConfigError: the registry has a metric of one of syncperf's names (``describe``).
        """
        self.registry = registry  # for ``describe``
        try:
            registry.register(self)
        except ValueError as error:  # prometheus_client's DuplicateTimeseries
            self.registry = None
            raise ConfigError(
                "prometheus",
                registry,
                f"a registry without metrics of syncperf's names ({error}): both would be "
                "exposed under one name and Prometheus would drop one; rename your metric",
            ) from None
        _collectors.add(self)

    def close(self) -> None:
        """Stop receiving data."""
        _collectors.discard(self)
        self.registry = None
        self.reader.close()

    def describe(self) -> list[Any]:
        """The families of the instruments there are (at registration: the core ones), with
        no samples: prometheus_client then refuses a metric of the same name in the registry,
        registered before or after. Names another of syncperf's collectors holds in it (the
        replaced runtime's, while a configuration changes) are left out."""
        from prometheus_client import Metric as Family

        held = getattr(self.registry, "_names_to_collectors", None) or {}
        found = []
        for instrument in list(self.reader._registry.instruments.values()):
            name = prometheus_name(instrument.name, instrument.unit)
            if not isinstance(held.get(name), SyncPerfCollector):
                kind = instrument.kind if instrument.kind in ("counter", "histogram") else "gauge"
                found.append(Family(name, instrument.description or name, kind))
        return found

    def collect(self) -> Iterator[Any]:
        """Translate one cumulative collection into Prometheus metric families."""
        if getattr(_muted, "on", False) or self not in _newest(self.registry):
            return  # ``scrape`` renders it itself, or a later runtime's replaces it
        yield from self.families()

    def families(self) -> Iterator[Any]:
        """One cumulative collection as Prometheus metric families."""
        data = self.reader.collect()
        for resource_metrics in data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    yield _family(metric)


_collectors: weakref.WeakSet[SyncPerfCollector] = weakref.WeakSet()
_serials = itertools.count()


def _newest(registry: Any) -> list[SyncPerfCollector]:
    """The collector ``registry`` exposes of syncperf's (none, or the latest runtime's: while
    ``configure()`` replaces a runtime, both of theirs are registered for a moment)."""
    ours = [c for c in list(_collectors) if c.registry is registry]
    return [max(ours, key=lambda c: c.serial)] if ours else []


_muted = threading.local()


def scrape(
    registry: Any, accept: str | None, accept_encoding: str | None, params: dict[str, Any]
) -> tuple[str, list[tuple[str, str]], bytes]:
    """``(status, headers, body)`` of a scrape of ``registry``, as prometheus_client serves
    it (content negotiation, ``name[]`` filters, gzip), with syncperf's collectors rendered
    directly instead of through metric families."""
    import gzip

    from prometheus_client.exposition import choose_encoder, gzip_accepted

    try:
        encoder, content_type = choose_encoder(accept or "")
    except TypeError:  # a version that is no number ("version=x"): the default format
        encoder, content_type = choose_encoder("")
    ours = _newest(registry)
    muted = bool(ours)  # the registry's encoding leaves syncperf's collectors out
    if "name[]" in params:  # rare: through metric families, filtered as prometheus_client does
        names = set(params["name[]"])
        parts = [registry.restricted_registry(names), _Restricted(ours, names)]
        registry = _Joined(*parts, *_unnamed(registry, names))
        ours = []
    elif content_type.partition("escaping=")[2] not in ("", "underscores", "allow-utf-8"):
        ours, muted = [], False  # names to escape (Prometheus 3's "dots", "values"): the
        # registry's encoding renders syncperf's collectors too, and escapes them
    openmetrics = content_type.startswith("application/openmetrics-text")
    _muted.on = muted
    try:
        output = encoder(registry)
    finally:
        _muted.on = False
    if ours:
        text = "".join(c.exposition.render(openmetrics) for c in ours).encode()
        if openmetrics:
            output = output.removesuffix(b"# EOF\n") + text + b"# EOF\n"
        else:
            output += text
    headers = [("Content-Type", content_type)]
    if gzip_accepted(accept_encoding or ""):
        output = gzip.compress(output)
        headers.append(("Content-Encoding", "gzip"))
    return "200 OK", headers, output


class _Restricted:
    """syncperf's collectors as metric families, keeping the samples named in ``names`` (what
    prometheus_client's ``restricted_registry`` does for collectors it knows the names of;
    syncperf's describe only the instruments there were at registration, and the restricted
    registry's encoding leaves them out, muted)."""

    def __init__(self, collectors: list[SyncPerfCollector], names: set[str]) -> None:
        self._collectors = collectors
        self._names = names

    def collect(self) -> Iterator[Any]:
        from prometheus_client import Metric as Family

        for collector in self._collectors:
            for family in collector.families():
                samples = [sample for sample in family.samples if sample.name in self._names]
                if samples:
                    kept = Family(family.name, family.documentation, family.type, family.unit)
                    kept.samples = samples
                    yield kept


def _unnamed(registry: Any, names: set[str]) -> list[Any]:
    """Multiprocess mode: the registry's collectors that describe no names, restricted to
    ``names`` (the restricted registry never reads them): the collector reading every
    worker's files, after syncperf's writer of this worker's (in the registry's order)."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # ``multiprocess.directory()``
        return []
    found = getattr(registry, "_collector_to_names", None)
    read = set(getattr(registry, "_collectors_without_names", ()))  # the restricted one reads them
    if not isinstance(found, dict):
        return []
    unnamed = [c for c, n in list(found.items()) if not n and c not in read]
    return [_Filtered(c, names) for c in unnamed if not isinstance(c, SyncPerfCollector)]


class _Filtered:
    """A collector's families, keeping the samples named in ``names``."""

    def __init__(self, collector: Any, names: set[str]) -> None:
        self._collector = collector
        self._names = names

    def collect(self) -> Iterator[Any]:
        for family in self._collector.collect():
            kept = family._restricted_metric(self._names)
            if kept:
                yield kept


class _Joined:
    """Registries read one after the other, as one (what prometheus_client's encoders read)."""

    def __init__(self, *parts: Any) -> None:
        self._parts = parts

    def collect(self) -> Iterator[Any]:
        for part in self._parts:
            yield from part.collect()


def family_samples(metric: Metric) -> tuple[str, str, tuple[str, ...], list[tuple[Any, Any]]]:
    """``(name, help, label names, [(label values, data point)])`` of a metric family."""
    points: list[Any] = list(metric.data.data_points)
    keys = sorted({k for p in points for k in (p.attributes or {})})

    def values(point: Any) -> tuple[str, ...]:
        attrs = point.attributes or {}
        return tuple(label_value(attrs.get(k, "")) for k in keys)

    return (
        prometheus_name(metric.name, metric.unit),
        metric.description or metric.name,
        tuple(label_name(k) for k in keys),
        [(values(point), point) for point in points],
    )


def _family(metric: Metric) -> Any:
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )

    data = metric.data
    name, doc, keys, points = family_samples(metric)
    labels = list(keys)
    if isinstance(data, Histogram):
        histogram = HistogramMetricFamily(name, doc, labels=labels)
        for values, point in points:
            buckets, running = [], 0
            for bound, count in zip(
                [*point.explicit_bounds, math.inf], point.bucket_counts, strict=True
            ):
                running += count
                buckets.append((le_value(bound), running))
            histogram.add_metric(list(values), buckets, point.sum)
        return histogram
    family: CounterMetricFamily | GaugeMetricFamily
    if isinstance(data, Sum) and data.is_monotonic:
        family = CounterMetricFamily(name, doc, labels=labels)
    else:
        assert isinstance(data, (Sum, Gauge))
        family = GaugeMetricFamily(name, doc, labels=labels)
    for values, point in points:
        family.add_metric(list(values), point.value)
    return family

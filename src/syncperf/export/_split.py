"""One collection in requests of a bounded number of points.

At ``max_series`` (2,000) for every instrument one collection is ~80,000 points and ~21 MiB
of OTLP; a collector refuses a gRPC message above 4 MiB by default, so the whole export
would fail, every time. ``RenewableMetricExporter`` sends it in pieces of at most
``MAX_EXPORT_BATCH_SIZE`` points instead (~0.7 MiB at syncperf's largest points), one after
the other within the export's timeout. The OTLP exporters' own ``max_export_batch_size`` is
not used: the gRPC one gives each piece the whole timeout and goes on after a failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from opentelemetry.sdk.metrics.export import MetricsData

from syncperf.exceptions import ConfigError

MAX_EXPORT_BATCH_SIZE = 1000
"""Points per request: ~0.7 MiB with syncperf's largest points (``db.client.operation.duration``
with long attribute values), well under a collector's 4 MiB default."""


def checked(most: object) -> int:
    """``most`` when it is an integer >= 1, else ``ConfigError``."""
    if isinstance(most, bool) or not isinstance(most, int) or most < 1:
        raise ConfigError("max_export_batch_size", most, "an integer >= 1")
    return most


def split(data: MetricsData, most: int) -> Iterator[MetricsData]:
    """``data`` in pieces of at most ``most`` points, in order; a metric whose points span
    pieces appears in each, with its own resource and scope."""
    pieces: list[tuple[Any, Any, Any]] = []  # (resource metrics, scope metrics, metric)
    room = most
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                points: list[Any] = list(metric.data.data_points)
                while points:
                    taken, points = points[:room], points[room:]
                    sliced: Any = metric.data  # one of four dataclasses, each with points
                    part = replace(metric, data=replace(sliced, data_points=taken))
                    pieces.append((resource_metrics, scope_metrics, part))
                    room -= len(taken)
                    if room == 0:
                        yield _assemble(pieces)
                        pieces, room = [], most
    if pieces:
        yield _assemble(pieces)


def _assemble(pieces: list[tuple[Any, Any, Any]]) -> MetricsData:
    """``MetricsData`` of consecutive (resource metrics, scope metrics, metric) pieces."""
    resources: list[tuple[Any, list[tuple[Any, list[Any]]]]] = []
    for resource_metrics, scope_metrics, metric in pieces:
        if not resources or resources[-1][0] is not resource_metrics:
            resources.append((resource_metrics, []))
        scopes = resources[-1][1]
        if not scopes or scopes[-1][0] is not scope_metrics:
            scopes.append((scope_metrics, []))
        scopes[-1][1].append(metric)
    return MetricsData(
        resource_metrics=[
            replace(
                resource_metrics,
                scope_metrics=[replace(scope, metrics=metrics) for scope, metrics in scopes],
            )
            for resource_metrics, scopes in resources
        ]
    )

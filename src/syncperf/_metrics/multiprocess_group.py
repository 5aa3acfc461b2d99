"""The group's side of multiprocess mode (``multiprocess``): the collector that reads every
worker's files for a scrape, and the checks made before a worker starts writing its own.

Imported only in multiprocess mode: it needs ``prometheus_client``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.multiprocess import MultiProcessCollector

from syncperf.exceptions import ConfigError


def check(registry: Any, directory: str, option: str = "prometheus") -> None:
    """Raise ``ConfigError`` unless syncperf can serve ``registry`` from the files in
    ``directory`` (``option``: the argument that named the registry).

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
    if not os.path.isdir(directory):
        raise ConfigError(
            "PROMETHEUS_MULTIPROC_DIR",
            directory,
            "an existing directory (create it, empty, before the server starts)",
        )


class Collector(MultiProcessCollector):
    """Every worker's files, less the gauges no longer observed (written as NaN)."""

    def collect(self) -> Iterator[Any]:
        for family in super().collect():  # type: ignore[no-untyped-call]
            if family.type == "gauge":
                family.samples = [s for s in family.samples if not math.isnan(s.value)]
                if not family.samples:
                    continue
            yield family

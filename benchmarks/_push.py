"""Issue 18's push workloads: one push of 50 items with 2 conflicts, metrics only.

Every variant records the same five measurements above the same uninstrumented handler:
duration (operation, entity, outcome), batch size, items (created / updated), conflicts and
operations in flight. ``python -m benchmarks._workloads push/<variant> <calls>``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

BODY = {"changes": [{"id": i} for i in range(50)]}
RESULT = {"conflicts": [{"id": 3}, {"id": 7}], "created": 30, "updated": 18}


def handler(table: str, body: dict[str, Any]) -> dict[str, Any]:
    """The uninstrumented push handler every variant wraps."""
    return RESULT


def _floor() -> Callable[..., Any]:
    perf = time.perf_counter

    def wrapper(table: str, body: dict[str, Any]) -> Any:
        t0 = perf()
        result = handler(table, body)
        wrapper.last = perf() - t0  # type: ignore[attr-defined]
        return result

    return wrapper


def _prometheus(prebound: bool) -> Callable[..., Any]:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    registry = CollectorRegistry()
    names = ("operation", "entity")
    duration = Histogram("sync_duration", "", [*names, "outcome"], registry=registry)
    batch = Histogram("sync_batch", "", names, registry=registry)
    items = Counter("sync_items", "", [*names, "change"], registry=registry)
    conflicts = Counter("sync_conflicts", "", names, registry=registry)
    active = Gauge("sync_active", "", ["operation"], registry=registry)
    perf = time.perf_counter
    children: dict[str, tuple[Any, ...]] = {}

    def children_of(entity: str) -> tuple[Any, ...]:
        return (
            duration.labels("push", entity, "conflict"),
            batch.labels("push", entity),
            items.labels("push", entity, "created"),
            items.labels("push", entity, "updated"),
            conflicts.labels("push", entity),
            active.labels("push"),
        )

    def bind(entity: str) -> tuple[Any, ...]:
        found = children.get(entity)
        if found is None:
            found = children[entity] = children_of(entity)
        return found

    labels = bind if prebound else children_of

    def wrapper(table: str, body: dict[str, Any]) -> Any:
        t0 = perf()
        d, b, created, updated, c, a = labels(table)
        a.inc()
        result = handler(table, body)
        b.observe(len(body["changes"]))
        created.inc(result["created"])
        updated.inc(result["updated"])
        c.inc(len(result["conflicts"]))
        a.dec()
        d.observe(perf() - t0)
        return result

    return wrapper


def _record_items(result: dict[str, Any]) -> None:
    import syncperf

    op = syncperf.current_operation()
    op.record_items(result["created"], change="created")
    op.record_items(result["updated"], change="updated")


def _syncperf(variant: str) -> Callable[..., Any]:
    import syncperf
    from syncperf import _runtime
    from syncperf._config import Config

    _runtime.replace(_runtime.Runtime(Config()))
    if variant == "extractors":

        @syncperf.instrument_sync(
            "push",
            entity=lambda table: table,
            batch_size=lambda body: len(body["changes"]),
            conflicts=lambda result: len(result["conflicts"]),
        )
        def push(table: str, body: dict[str, Any]) -> Any:
            result = handler(table, body)
            _record_items(result)
            return result

        return push
    if variant == "recorder":

        @syncperf.instrument_sync("push")
        def recorded(table: str, body: dict[str, Any]) -> Any:
            result = handler(table, body)
            op = syncperf.current_operation()
            op.set_entity(table)
            op.set_batch_size(len(body["changes"]))
            op.record_items(result["created"], change="created")
            op.record_items(result["updated"], change="updated")
            op.record_conflict(count=len(result["conflicts"]))
            return result

        return recorded

    # the handler itself, as the floor wraps it (a function around it adds a frame)
    return syncperf.instrument_sync("push", entity="todo")(handler)


def build(variant: str) -> Callable[[], object]:
    """The variant as a no-argument call."""
    if variant == "handler":
        fn: Callable[..., Any] = handler
    elif variant == "floor":
        fn = _floor()
    elif variant.startswith("prometheus"):
        fn = _prometheus(variant == "prometheus")
    else:
        fn = _syncperf(variant)
    fn("todo", BODY)
    return lambda: fn("todo", BODY)

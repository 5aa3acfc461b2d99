"""In-flight counts open across ``configure()``: a pull output served by both configurations
goes on from what the old one counted, so an operation begun before the change is still in
``sync.operations.active`` until it ends (in the runtime that began it)."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

import syncperf
from syncperf import _runtime


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    served = CollectorRegistry()
    previous = _runtime.replace(None)
    try:
        syncperf.configure(prometheus=served, export_interval=3600)
        yield served
    finally:
        installed = _runtime.replace(previous)
        if installed is not None:
            installed.shutdown()


def _active(registry: CollectorRegistry, operation: str = "push") -> float | None:
    return registry.get_sample_value("sync_operations_active", {"sync_operation": operation})


def _open(operation: str = "push") -> tuple[contextvars.Context, Any]:
    """An operation begun in a context of its own (it joins no other)."""
    context = contextvars.copy_context()
    scope = context.run(syncperf.sync_operation, operation, entity="todo")
    context.run(scope.__enter__)
    return context, scope


def _close(opened: tuple[contextvars.Context, Any]) -> None:
    context, scope = opened
    context.run(scope.__exit__, None, None, None)


def test_an_operation_open_across_configure_stays_active_until_it_ends(
    registry: CollectorRegistry,
) -> None:
    first = _open()
    assert _active(registry) == 1
    syncperf.configure(prometheus=registry, export_interval=3600)
    assert _active(registry) == 1
    second = _open()
    assert _active(registry) == 2
    _close(first)
    assert _active(registry) == 1
    _close(second)
    assert _active(registry) == 0


def test_operations_open_across_several_configures_are_each_counted_once(
    registry: CollectorRegistry,
) -> None:
    opened = [_open("push"), _open("pull")]
    syncperf.configure(prometheus=registry, export_interval=3600)
    opened.append(_open("push"))
    syncperf.configure(prometheus=registry, export_interval=3600)
    opened.append(_open("pull"))
    assert (_active(registry, "push"), _active(registry, "pull")) == (2, 2)
    for each in opened:
        _close(each)
    assert (_active(registry, "push"), _active(registry, "pull")) == (0, 0)

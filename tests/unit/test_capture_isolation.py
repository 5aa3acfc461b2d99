"""``testing.capture()`` isolates a test: outboxes of earlier captures, a ``configure()`` by
the code under test and production environment settings do not reach into it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult

import syncperf
from syncperf import _runtime
from syncperf.exceptions import ConfigError, MeasurementError
from syncperf.outbox import Outbox
from syncperf.testing import Capture, capture


def depths(cap: Capture) -> list[float]:
    return [p.value for p in cap.points("outbox.depth")]


def test_an_outbox_kept_alive_after_its_capture_leaves_its_name_free_for_the_next() -> None:
    """A failed test's traceback keeps its outbox alive: the next test may still make one."""
    with capture():
        kept = Outbox("orders", stats=lambda: (1, 2.0))
    with capture() as cap:
        second = Outbox("orders", stats=lambda: (5, 2.0))
        assert depths(cap) == [5]
    assert not kept._closed
    assert second.name == kept.name


def test_an_outbox_kept_alive_after_its_capture_is_not_probed_by_later_runtimes() -> None:
    calls: list[int] = []

    def stats() -> tuple[int, float]:
        calls.append(1)
        return (1, 2.0)

    with capture() as first:
        kept = Outbox("orders", stats=stats)
        assert depths(first) == [1]
    with capture() as later:
        kept.enqueue()  # binds its series on the later runtime
        assert depths(later) == []
    assert calls == [1]


def test_an_outbox_made_outside_any_capture_is_probed_in_every_capture() -> None:
    outbox = Outbox("orders", stats=lambda: (3, 2.0))
    try:
        for _ in range(2):
            with capture() as cap:
                assert depths(cap) == [3]
    finally:
        outbox.close()


def test_an_outbox_made_outside_any_capture_still_holds_its_name_inside_one() -> None:
    outbox = Outbox("orders", stats=lambda: (3, 2.0))
    try:
        with capture(), pytest.raises(ConfigError, match="orders"):
            Outbox("orders", stats=lambda: (5, 2.0))
    finally:
        outbox.close()


def test_an_outbox_of_an_enclosing_capture_is_seen_in_a_nested_one() -> None:
    with capture():
        outer = Outbox("orders", stats=lambda: (3, 2.0))
        with capture() as inner:
            assert depths(inner) == [3]
            with pytest.raises(ConfigError, match="orders"):
                Outbox("orders", stats=lambda: (5, 2.0))
        outer.close()


# --- configure() inside a capture ------------------------------------------------------------


class CountingExporter(MetricExporter):
    """The application's exporter: counts the ``sync.items`` it is sent."""

    def __init__(self) -> None:
        super().__init__()
        self.items = 0.0

    def export(self, metrics_data: Any, timeout_millis: float = 10_000, **_: Any) -> Any:
        for rm in metrics_data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == "sync.items":
                        self.items += sum(p.value for p in metric.data.data_points)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **_: Any) -> None:
        pass


def _push(items: int) -> None:
    with syncperf.sync_operation("push", entity="todo") as op:
        op.record_items(items)


def test_configure_inside_a_capture_leaves_the_capture_in_force() -> None:
    with capture() as cap:
        _push(2)
        config = syncperf.configure(max_entities=50)  # an app factory, a lifespan
        _push(3)
        assert _runtime.current() is cap.runtime
        assert cap.total("sync.items") == 5
        assert len(cap.spans()) == 2
        assert cap.configured == [config]
        assert config.max_entities == 50


def test_a_capture_that_begins_while_configure_builds_its_runtime_stays_in_force(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """configure() in the application's thread, capture() beginning in the test's meanwhile:
    the capture keeps its place, and the runtime configure() built is shut down unused."""
    app = _runtime.current()
    exporter = CountingExporter()
    opened = ExitStack()
    built: list[_runtime.Runtime] = []

    def begin_a_capture(rt: _runtime.Runtime) -> None:  # while configure() builds ``rt``
        if not built:
            built.append(rt)
            opened.enter_context(capture())

    monkeypatch.setattr(_runtime, "RUNTIME_HOOKS", [*_runtime.RUNTIME_HOOKS, begin_a_capture])
    with opened:
        config = syncperf.configure(metric_exporters=[exporter], export_interval=3600)
        cap = _runtime.current().capture
        assert cap is not None and cap.runtime is not built[0]
        assert cap.configured == [config]
        _push(4)
        assert cap.total("sync.items") == 4
    assert not any(p._thread.is_alive() for p in built[0].feeds.exporters)  # shut down
    assert _runtime.current() is app
    syncperf.force_flush()
    assert exporter.items == 0


def test_configure_inside_a_capture_keeps_strict_mode() -> None:
    with capture():
        syncperf.configure(strict=False)
        with pytest.raises(MeasurementError), syncperf.sync_operation("push") as op:
            op.record_items(-1)


def test_configure_inside_a_capture_sends_nothing_to_the_applications_exporter() -> None:
    exporter = CountingExporter()
    with capture():
        syncperf.configure(metric_exporters=[exporter], export_interval=3600)
        _push(5)
        syncperf.force_flush()
    assert exporter.items == 0


def test_configure_inside_a_capture_still_rejects_bad_options() -> None:
    with capture() as cap, pytest.raises(ConfigError, match="max_entities"):
        syncperf.configure(max_entities=-1)
    assert cap.configured == []


def test_the_runtime_configured_before_a_capture_is_current_again_after_it() -> None:
    previous = _runtime.replace(None)
    try:
        syncperf.configure(max_entities=7)
        outside = _runtime.current()
        with capture():
            syncperf.configure(max_entities=8)
        assert _runtime.current() is outside
    finally:
        installed = _runtime.replace(previous)
        if installed is not None:
            installed.shutdown()


# --- the environment --------------------------------------------------------------------------


def test_a_trace_sample_rate_in_the_environment_leaves_the_captures_spans_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SYNCPERF_TRACE_SAMPLE_RATE", "0")
    with capture() as cap:
        _push(1)
        assert len(cap.spans()) == 1


def test_a_trace_sample_rate_given_to_the_capture_still_applies() -> None:
    with capture(trace_sample_rate=0.0) as cap:
        _push(1)
        assert cap.spans() == []


# --- captures that end out of order (two threads, two tasks) ---------------------------------


@pytest.fixture
def application() -> Iterator[_runtime.Runtime]:
    """The application's runtime, configured outside any capture (restored afterwards)."""
    previous = _runtime.replace(None)
    try:
        syncperf.configure(max_entities=7)
        yield _runtime.current()
    finally:
        installed = _runtime.replace(previous)
        if installed is not None:
            installed.shutdown()


def _interleaved() -> tuple[Capture, Capture]:
    """Capture A, then B entered, then A ended first, then B."""
    first, second = capture(), capture()
    a = first.__enter__()
    b = second.__enter__()
    first.__exit__(None, None, None)
    second.__exit__(None, None, None)
    return a, b


def test_the_applications_runtime_is_current_again_after_captures_that_end_out_of_order(
    application: _runtime.Runtime,
) -> None:
    _interleaved()
    assert _runtime.current() is application


def test_configure_after_captures_that_end_out_of_order_installs_its_settings(
    application: _runtime.Runtime,
) -> None:
    a, b = _interleaved()
    syncperf.configure(max_entities=9)
    rt = _runtime.current()
    assert rt.capture is None
    assert rt.config.max_entities == 9
    assert a.configured == b.configured == []


def test_a_capture_that_ends_first_leaves_the_one_entered_after_it_in_force(
    application: _runtime.Runtime,
) -> None:
    first, second = capture(), capture()
    first.__enter__()
    b = second.__enter__()
    first.__exit__(None, None, None)
    try:
        assert _runtime.current() is b.runtime
        config = syncperf.configure(max_entities=9)  # still a capture's: noted, not installed
        assert b.configured == [config]
    finally:
        second.__exit__(None, None, None)
    assert _runtime.current() is application


def test_configure_installs_its_settings_over_a_capture_that_has_ended(
    application: _runtime.Runtime,
) -> None:
    with capture() as cap:
        pass
    _runtime.replace(cap.runtime)  # however an ended capture's runtime came to be installed
    try:
        syncperf.configure(max_entities=9)
        assert _runtime.current().capture is None
        assert cap.configured == []
    finally:
        application.shutdown()  # replaced above, by hand

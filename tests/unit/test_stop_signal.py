"""The stop signal exports first: a handler chained in front of the server's, never in place of
a default action."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData

import syncperf
from syncperf import _process_exit, _runtime, _stop_signal

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX signals")


class _Recording(MetricExporter):
    """Records the time of each export; hangs while ``hang`` is not set."""

    def __init__(self) -> None:
        super().__init__()
        self.exports: list[float] = []
        self.go = threading.Event()
        self.go.set()

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: object
    ) -> MetricExportResult:
        self.go.wait(30)
        self.exports.append(time.monotonic())
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: object) -> None:
        pass


class _Server:
    """A server's SIGTERM handler: records when it was called."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, float]] = []

    def handle_exit(self, signum: int, frame: FrameType | None) -> None:
        self.calls.append((signum, time.monotonic()))


@pytest.fixture
def clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """SIGTERM and SIGINT as they were, a process that saw no stop signal, no runtime."""
    saved = {signum: signal.getsignal(signum) for signum in _stop_signal.SIGNALS}
    monkeypatch.setattr(_stop_signal, "_seen", False)
    monkeypatch.setattr(_process_exit, "_exit_stalled", False)
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)
    previous = _runtime.replace(None)
    if previous is not None:
        previous.shutdown()


def _until(condition: Callable[[], object], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)  # the main thread runs Python signal handlers between these


def _recorded(**options: Any) -> _Recording:
    exporter = _Recording()
    syncperf.configure(metric_exporters=[exporter], **options)
    with syncperf.sync_operation("push", entity="todo"):
        pass
    return exporter


def test_the_server_handler_runs_once_after_the_export(clean: None) -> None:
    exporter = _recorded()
    server = _Server()
    signal.signal(signal.SIGTERM, server.handle_exit)
    _stop_signal.arm()
    assert signal.getsignal(signal.SIGTERM) is not server.handle_exit
    signal.raise_signal(signal.SIGTERM)
    _until(lambda: server.calls)
    time.sleep(0.1)
    assert [signum for signum, _ in server.calls] == [signal.SIGTERM]
    assert exporter.exports and exporter.exports[0] <= server.calls[0][1]


def test_a_later_signal_goes_straight_to_the_server(clean: None) -> None:
    _recorded()
    server = _Server()
    signal.signal(signal.SIGTERM, server.handle_exit)
    _stop_signal.arm()
    signal.raise_signal(signal.SIGTERM)
    _until(lambda: server.calls)
    signal.raise_signal(signal.SIGTERM)
    _until(lambda: len(server.calls) == 2)


def test_arming_twice_chains_once(clean: None) -> None:
    _recorded()
    server = _Server()
    signal.signal(signal.SIGTERM, server.handle_exit)
    _stop_signal.arm()
    chained = signal.getsignal(signal.SIGTERM)
    _stop_signal.arm()
    assert signal.getsignal(signal.SIGTERM) is chained


def test_a_default_action_is_never_replaced(clean: None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    _stop_signal.arm()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _stop_signal.arm()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN


def test_nothing_is_chained_off_the_main_thread(clean: None) -> None:
    server = _Server()
    signal.signal(signal.SIGTERM, server.handle_exit)
    thread = threading.Thread(target=_stop_signal.arm)
    thread.start()
    thread.join()
    assert signal.getsignal(signal.SIGTERM) == server.handle_exit


def test_without_a_live_flush_thread_the_server_handler_runs_at_once(
    clean: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = _Server()
    signal.signal(signal.SIGTERM, server.handle_exit)
    _stop_signal.arm()
    read, write = os.pipe()
    monkeypatch.setattr(_stop_signal, "_pipe", (read, write))
    os.close(write)  # the flush thread reading ``read`` ends at once
    thread = threading.Thread(target=_stop_signal._flush_on_signal, args=(read,))
    thread.start()
    thread.join(5)
    os.close(read)
    assert _stop_signal._pipe is None
    handler = signal.getsignal(signal.SIGTERM)
    assert callable(handler)
    handler(signal.SIGTERM, None)
    assert [signum for signum, _ in server.calls] == [signal.SIGTERM]


def test_an_asyncio_handled_signal_is_exported_beside_the_stop_and_not_delivered_again(
    clean: None,
) -> None:
    exporter = _recorded()
    calls: list[int] = []
    loop = asyncio.new_event_loop()
    try:
        loop.add_signal_handler(signal.SIGTERM, calls.append, signal.SIGTERM)
        _stop_signal.arm()
        signal.raise_signal(signal.SIGTERM)
        loop.run_until_complete(asyncio.sleep(0.05))
        assert calls == [signal.SIGTERM]
        _until(lambda: exporter.exports)
        loop.run_until_complete(asyncio.sleep(0.2))
        assert calls == [signal.SIGTERM]
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        loop.close()


def test_the_final_flush_does_not_wait_again_after_a_stalled_stop_flush(clean: None) -> None:
    exporter = _recorded(shutdown_timeout=0.5)
    exporter.go.clear()
    server = _Server()
    signal.signal(signal.SIGTERM, server.handle_exit)
    _stop_signal.arm()
    started = time.monotonic()
    try:
        signal.raise_signal(signal.SIGTERM)
        time.sleep(0.05)
        assert _process_exit.flush_for_exit() is False  # the lifespan shutdown's, meanwhile
        _until(lambda: server.calls)
        assert time.monotonic() - started < 1.2  # one bound, not two
        assert _process_exit.flush_for_exit() is False  # the exit hook's: no wait at all
        assert time.monotonic() - started < 1.3
    finally:
        exporter.go.set()


def test_a_forked_child_arms_its_own_flush_thread(
    clean: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = _Server()
    signal.signal(signal.SIGTERM, server.handle_exit)
    _stop_signal.arm()
    assert _stop_signal._pipe is not None
    monkeypatch.setattr(_stop_signal, "_seen", True)  # the parent is stopping
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        ok = _stop_signal._pipe is None and not _stop_signal._seen
        _stop_signal.arm()  # its own thread, behind the handler it inherited
        ok = ok and _stop_signal._pipe is not None
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0

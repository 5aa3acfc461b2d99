"""An operation (or an outbox publish batch) open across ``fork()`` runs in the parent: the
child neither joins it nor ends it (nothing counted twice, no span exported twice), and counts
its own operations.

A handler that forks a worker (``os.fork``, a ``multiprocessing`` ``fork`` ``Process`` or
``Pool``) does so inside its own operation; the child inherits that operation as current,
but it never ends there: joined, the child's operations would be lost.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON

import syncperf
from syncperf import _lifecycle, _operation
from syncperf.outbox import Outbox, _publish, current_batch
from syncperf.testing import Capture, capture
from tests._forked import answer_of, in_a_worker

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),  # fork with threads (3.12+)
]
_TIMEOUT = 60.0


def _pull() -> None:
    with syncperf.sync_operation("pull", entity="todo"):
        pass


@syncperf.instrument_sync("pull", entity="todo")
def _decorated_pull() -> None:
    pass


def _counts(cap: Capture) -> dict[str, Any]:
    return {
        "pull": cap.total("sync.operation.duration", {"sync.operation": "pull"}),
        "push": cap.total("sync.operation.duration", {"sync.operation": "push"}),
        "active": cap.total("sync.operations.active"),
        "spans": sorted(span.name for span in cap.spans()),
        "current": syncperf.current_operation().recording,
    }


def _answer(write: int, result: object) -> None:
    os.write(write, json.dumps(result).encode())


def _parent_counted_once(cap: Capture, spans: bool = True) -> None:
    assert cap.total("sync.operation.duration", {"sync.operation": "push"}) == 1
    assert cap.total("sync.operation.duration", {"sync.operation": "pull"}) == 0
    assert cap.total("sync.operations.active") == 0
    assert [span.name for span in cap.spans()] == (["sync push"] if spans else [])


def test_a_child_forked_in_an_operation_counts_its_own_and_never_ends_the_parents() -> None:
    with capture() as cap:
        read, write = os.pipe()
        with syncperf.sync_operation("push", entity="todo"):
            pid = os.fork()
            if pid == 0:
                os.close(read)
                inside = {"current": syncperf.current_operation().recording}
        if pid == 0:  # the child left the block: the inherited operation ends here no more
            code = 1
            try:
                left = _counts(cap)
                _pull()
                _decorated_pull()
                with syncperf.sync_operation("pull"):
                    _pull()  # joins the child's own
                _answer(write, {**inside, "left": left, "after": _counts(cap)})
                code = 0
            finally:
                os._exit(code)
        os.close(write)
        child = answer_of(pid, read, _TIMEOUT)
        assert child["current"] is False  # not the parent's operation
        assert child["left"] == {
            "pull": 0, "push": 0, "active": 0, "spans": [], "current": False
        }  # fmt: skip
        assert child["after"]["pull"] == 3
        assert child["after"]["push"] == 0
        assert child["after"]["active"] == 0
        assert child["after"]["spans"] == ["sync pull"] * 3
        _parent_counted_once(cap)


@pytest.mark.parametrize("sampled", [True, False])  # unsampled: the compiled end's case
def test_a_child_forked_by_a_decorated_handler_returns_through_it_uncounted(
    sampled: bool,
) -> None:
    read, write = os.pipe()
    spans = ["sync pull"] if sampled else []

    @syncperf.instrument_sync("push", entity="todo")
    def handler() -> int:
        return os.fork()

    with capture(sampler=ALWAYS_ON if sampled else ALWAYS_OFF) as cap:
        pid = handler()
        if pid == 0:
            code = 1
            try:
                os.close(read)
                left = _counts(cap)
                _decorated_pull()
                _answer(write, {"left": left, "after": _counts(cap)})
                code = 0
            finally:
                os._exit(code)
        os.close(write)
        child = answer_of(pid, read, _TIMEOUT)
        assert (child["left"]["push"], child["left"]["active"], child["left"]["spans"]) == (
            0,
            0,
            [],
        )
        assert child["after"]["pull"] == 1
        assert child["after"]["spans"] == spans
        _parent_counted_once(cap, spans=sampled)


def _mp_work(conn: Any) -> None:
    """A multiprocessing child's target: its own operations, and what it counted."""
    cap = _CAPTURE[0]
    try:
        inside = syncperf.current_operation().recording
        for _ in range(3):
            _pull()
        _decorated_pull()
        conn.send({"current": inside, **_counts(cap)})
    finally:
        conn.close()


_CAPTURE: list[Capture] = []


def test_a_multiprocessing_fork_child_of_an_operation_counts_its_own() -> None:
    ctx = multiprocessing.get_context("fork")
    with capture() as cap:
        _CAPTURE[:] = [cap]
        receive, send = ctx.Pipe(duplex=False)
        with syncperf.sync_operation("push", entity="todo"):
            process = ctx.Process(target=_mp_work, args=(send,))
            process.start()
            send.close()
            assert receive.poll(_TIMEOUT), "the child did not answer"
            child = receive.recv()
            process.join(_TIMEOUT)
        assert process.exitcode == 0
        assert child["current"] is False
        assert (child["pull"], child["push"], child["active"]) == (4, 0, 0)
        assert child["spans"] == ["sync pull"] * 4
        _parent_counted_once(cap)


@syncperf.instrument_sync("push", entity="todo")
def _forking_handler() -> None:
    _lifecycle._after_fork_in_child()  # as if it forked: what the child runs
    assert syncperf.current_operation().recording is False
    _pull()  # not joined: its own operation


def _forking_block() -> None:
    with syncperf.sync_operation("push", entity="todo"):
        _lifecycle._after_fork_in_child()
        assert syncperf.current_operation().recording is False
        _pull()


@pytest.mark.parametrize("sampled", [True, False])  # unsampled: the compiled end's case
@pytest.mark.parametrize("run", [_forking_handler, _forking_block])
def test_the_child_hook_ends_the_current_operation_uncounted(sampled: bool, run: Any) -> None:
    # what the child does after fork, in one process: the end (compiled or not) of the
    # operation inherited from the parent counts nothing and leaves the context clean
    with capture(sampler=ALWAYS_ON if sampled else ALWAYS_OFF) as cap:
        run()
        run()  # (the compiled path binds its series on the first call)
        assert _operation.active_operation() is None
        assert trace.get_current_span() is trace.INVALID_SPAN
        assert cap.total("sync.operation.duration", {"sync.operation": "push"}) == 0
        assert cap.total("sync.operation.duration", {"sync.operation": "pull"}) == 2
        assert cap.total("sync.operations.active") == 0
        assert [span.name for span in cap.spans()] == (["sync pull"] * 2 if sampled else [])


# --- outbox publish batches ---------------------------------------------------------------


def _batch_counts(cap: Capture) -> dict[str, Any]:
    return {
        "published": cap.total("outbox.messages", {"outbox.event": "published"}),
        "batches": cap.total("outbox.publish.duration"),
        "spans": sorted(span.name for span in cap.spans()),
        "current": current_batch().recording,
    }


def test_a_child_forked_in_a_publish_batch_counts_its_own_and_never_ends_the_parents() -> None:
    # as for an operation: the batch runs in the parent, which counts it and exports its span
    with capture() as cap:
        outbox = Outbox("orders")
        read, write = os.pipe()
        with outbox.publish() as batch:
            batch.published()
            pid = os.fork()
            if pid == 0:
                os.close(read)
                batch.published()  # the parent's batch: lost here
        if pid == 0:  # the child left the block: the inherited batch ends here no more
            code = 1
            try:
                left = _batch_counts(cap)
                with outbox.publish() as own:
                    own.published()
                _answer(write, {"left": left, "after": _batch_counts(cap)})
                code = 0
            finally:
                os._exit(code)
        os.close(write)
        child: Any = answer_of(pid, read, _TIMEOUT)
        assert child["left"] == {"published": 0, "batches": 0, "spans": [], "current": False}
        ours = {"published": 1, "batches": 1, "spans": ["send orders"], "current": False}
        assert child["after"] == ours
        assert _batch_counts(cap) == ours


@pytest.mark.parametrize("sampled", [True, False])  # unsampled: a failed batch is rescued
def test_the_child_hook_ends_the_open_publish_batches_uncounted(sampled: bool) -> None:
    # what the child does after fork, in one process: leaving the inherited batch's block
    # counts nothing, ends no span and leaves the context clean; its own batches count
    with capture(sampler=ALWAYS_ON if sampled else ALWAYS_OFF) as cap:
        outbox = Outbox("orders")
        with outbox.publish() as batch:
            batch.failed("Timeout")
            _publish._after_fork_in_child()
            assert current_batch().recording is False
            batch.published()
            with outbox.publish() as own:
                own.published()
        assert current_batch().recording is False
        assert trace.get_current_span() is trace.INVALID_SPAN
        assert cap.total("outbox.messages", {"outbox.event": "failed"}) == 0
        assert _batch_counts(cap) == {
            "published": 1,
            "batches": 1,
            "spans": ["send orders"] if sampled else [],
            "current": False,
        }


def test_children_forked_while_threads_record_count_their_own_and_never_hang() -> None:
    """A fork while other threads end operations: one of them may have taken the registry
    lock's semaphore and be waiting for the GIL to mark it held. The child's copy was then
    taken and unmarked (``locked()`` False, no ``acquire`` ever returning), and its first
    fold or collection hung for good; the child now resets it (``_at_fork_reinit``)."""
    import threading

    with capture(tracer_provider=trace.NoOpTracerProvider(), strict=False) as cap:
        stop = threading.Event()

        def work() -> None:
            while not stop.is_set():
                _decorated_pull()

        threads = [threading.Thread(target=work) for _ in range(2)]
        for thread in threads:
            thread.start()
        try:

            def child() -> list[float]:
                for _ in range(3):
                    _decorated_pull()
                return [
                    cap.total("sync.operation.duration", {"sync.operation": "pull"}),
                    cap.total("sync.operations.active"),
                ]

            answers = [in_a_worker(child, timeout=10) for _ in range(30)]
        finally:
            stop.set()
            for thread in threads:
                thread.join()
    assert answers == [[3, 0]] * 30

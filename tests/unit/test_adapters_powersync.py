"""PowerSync-style upload endpoint: CRUD entries, retried transactions, app-defined rejections."""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from syncperf.adapters import powersync
from syncperf.testing import Capture, capture
from tests._adapters import recorded, run, span_attributes


def entry(op: str, table: str, tx_id: int | None = None, key: str = "type") -> dict[str, Any]:
    return {"op_id": 1, "op": op, key: table, "id": "r1", "tx_id": tx_id, "data": {"a": 1}}


def test_batch_upload_counts_entries_by_table_and_op(syncperf_capture: Capture) -> None:
    body = {
        "batch": [
            entry("PUT", "todos", key="table"),
            entry("PATCH", "todos", key="table"),
            entry("DELETE", "lists", key="table"),
        ]
    }
    run(powersync.Upload(), body, {"ok": True})
    got = recorded(syncperf_capture)
    assert got.batches == [(1, 3)]
    assert got.items == {("todos", "created"): 1, ("todos", "updated"): 1, ("lists", "deleted"): 1}


def test_a_crud_transaction_and_a_bare_array_are_read_too(syncperf_capture: Capture) -> None:
    run(powersync.Upload(), {"crud": [entry("PUT", "todos")], "transactionId": 4})
    run(powersync.Upload(), [entry("patch", "todos")])
    assert recorded(syncperf_capture).items == {("todos", "created"): 1, ("todos", "updated"): 1}


def test_entries_of_applied_transactions_are_duplicates(syncperf_capture: Capture) -> None:
    body = {
        "batch": [entry("PUT", "todos", 7), entry("PATCH", "todos", 7), entry("PUT", "todos", 8)]
    }
    run(powersync.Upload(last_tx_id=lambda body: 7), body)
    got = recorded(syncperf_capture)
    assert got.items == {("todos", "created"): 1}
    assert got.idempotency == 1
    assert got.batches == [(1, 3)]
    assert span_attributes(syncperf_capture)["sync.powersync.duplicate_entries"] == 2


def test_the_transaction_id_of_a_crud_transaction_applies_to_its_entries(
    syncperf_capture: Capture,
) -> None:
    body = {"crud": [entry("PUT", "todos")], "transactionId": 3}
    run(powersync.Upload(last_tx_id=lambda body: 3), body)
    assert recorded(syncperf_capture).idempotency == 1


def test_the_conflicts_callback_reads_rejections_from_the_response(
    syncperf_capture: Capture,
) -> None:
    adapter = powersync.Upload(conflicts=lambda response: response["rejected"])
    run(adapter, {"batch": [entry("PUT", "todos")]}, {"rejected": {"todos": 2, "lists": 0}})
    run(adapter, {"batch": [entry("PUT", "todos")]}, {"rejected": 1})
    run(adapter, {"batch": [entry("PUT", "todos")]}, {"rejected": None})
    got = recorded(syncperf_capture)
    assert got.conflicts == {("todos", "rejected"): 2, (None, "rejected"): 1}
    assert got.outcomes == {"conflict": 2, "success": 1}


def test_a_conflicts_callback_returning_nonsense_is_a_callback_failure() -> None:
    with capture(strict=False) as cap:
        run(powersync.Upload(conflicts=lambda r: {"todos": -1}), {"batch": []}, {})
        got = recorded(cap)
    assert got.dropped == {"adapter_callback_failed": 1}


def test_an_unknown_op_is_unparseable() -> None:
    with capture(strict=False) as cap:
        run(powersync.Upload(), {"batch": [entry("UPSERT", "todos")]})
        got = recorded(cap)
    assert got.dropped == {"unparseable_payload": 1}


@settings(max_examples=150, deadline=None)
@given(
    entries=st.lists(
        st.tuples(
            st.sampled_from(["PUT", "PATCH", "DELETE"]),
            st.sampled_from(["a", "b"]),
            st.integers(0, 10),
        ),
        max_size=25,
    ),
    last=st.none() | st.integers(0, 10),
)
def test_counts_match_a_direct_computation(
    entries: list[tuple[str, str, int]], last: int | None
) -> None:
    body = {"batch": [entry(op, table, tx) for op, table, tx in entries]}
    with capture() as cap:
        run(powersync.Upload(last_tx_id=lambda body: last), body)
        got = recorded(cap)
    change = {"PUT": "created", "PATCH": "updated", "DELETE": "deleted"}
    fresh = [(op, table) for op, table, tx in entries if last is None or tx > last]
    assert got.items == dict(Counter((table, change[op]) for op, table in fresh))
    assert got.batches == [(1, len(entries))]
    assert got.idempotency == (1 if len(fresh) < len(entries) else 0)

"""RxDB HTTP replication: pull documents, push rows, returned conflicts."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from syncperf.adapters import rxdb
from syncperf.testing import Capture, capture
from tests._adapters import recorded, run, span_attributes


def doc(key: str, title: str = "t", deleted: bool = False, **extra: Any) -> dict[str, Any]:
    return {"id": key, "title": title, "updatedAt": 1, "_deleted": deleted, **extra}


def test_pull_counts_documents_and_deletions(syncperf_capture: Capture) -> None:
    response = {
        "documents": [doc("a"), doc("b"), doc("c", deleted=True)],
        "checkpoint": {"id": "c", "updatedAt": 1},
    }
    run(rxdb.Pull(), None, response, operation="pull", entity="todo")
    got = recorded(syncperf_capture)
    assert got.batches == [(1, 3)]
    assert got.items == {("todo", None): 2, ("todo", "deleted"): 1}


def test_push_counts_created_updated_and_deleted_rows(syncperf_capture: Capture) -> None:
    rows = [
        {"assumedMasterState": None, "newDocumentState": doc("a")},
        {"newDocumentState": doc("b")},
        {"assumedMasterState": doc("c"), "newDocumentState": doc("c", "new")},
        {"assumedMasterState": doc("d"), "newDocumentState": doc("d", deleted=True)},
    ]
    run(rxdb.Push(), rows, [], entity="todo")
    got = recorded(syncperf_capture)
    assert got.batches == [(1, 4)]
    assert got.items == {("todo", "created"): 2, ("todo", "updated"): 1, ("todo", "deleted"): 1}
    assert got.outcomes == {"success": 1}


def test_returned_master_documents_are_conflicts(syncperf_capture: Capture) -> None:
    rows = [{"assumedMasterState": doc("c", "old"), "newDocumentState": doc("c", "mine")}]
    run(rxdb.Push(), rows, [doc("c", "theirs")], entity="todo")
    got = recorded(syncperf_capture)
    assert got.conflicts == {("todo", None): 1}
    assert got.idempotency == 0
    assert got.outcomes == {"conflict": 1}


def test_a_returned_master_equal_to_the_pushed_state_is_a_retry(syncperf_capture: Capture) -> None:
    # first attempt applied, response lost: the master now equals what this push wants
    rows = [{"assumedMasterState": doc("c", "old"), "newDocumentState": doc("c", "mine")}]
    master = doc("c", "mine", _meta={"lwt": 5}, _rev="2-x")
    run(rxdb.Push(), rows, {"conflicts": [master]}, entity="todo")
    got = recorded(syncperf_capture)
    assert got.conflicts == {}
    assert got.idempotency == 1
    assert span_attributes(syncperf_capture)["sync.rxdb.applied_conflicts"] == 1


def test_a_custom_primary_key_matches_conflicts_to_rows(syncperf_capture: Capture) -> None:
    state = {"key": "k1", "v": 1, "_deleted": False}
    rows = [{"assumedMasterState": None, "newDocumentState": state}]
    run(rxdb.Push(primary_key="key"), rows, [dict(state)])
    assert recorded(syncperf_capture).idempotency == 1


def test_a_push_without_new_document_state_is_unparseable() -> None:
    with capture(strict=False) as cap:
        run(rxdb.Push(), [{"assumedMasterState": None}], [])
        got = recorded(cap)
    assert got.dropped == {"unparseable_payload": 1}


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.booleans(), st.booleans(), st.sampled_from(["none", "real", "applied"])),
        max_size=20,
    )
)
def test_push_counts_match_a_direct_computation(rows: list[tuple[bool, bool, str]]) -> None:
    pushed, conflicts = [], []
    created = deleted = real = applied = 0
    for index, (has_master, is_deleted, conflict) in enumerate(rows):
        new = doc(str(index), "mine", deleted=is_deleted)
        pushed.append(
            {"assumedMasterState": doc(str(index)) if has_master else None, "newDocumentState": new}
        )
        if conflict == "applied":  # a retry of an applied row: not an item again
            pass
        elif is_deleted:
            deleted += 1
        elif not has_master:
            created += 1
        if conflict == "real":
            conflicts.append(doc(str(index), "theirs"))
            real += 1
        elif conflict == "applied":
            conflicts.append(dict(new))
            applied += 1
    with capture() as cap:
        run(rxdb.Push(), pushed, conflicts)
        got = recorded(cap)
    expected = {
        (None, "created"): created,
        (None, "deleted"): deleted,
        (None, "updated"): len(rows) - applied - created - deleted,
    }
    assert got.items == {k: v for k, v in expected.items() if v}
    assert got.conflicts == ({(None, None): real} if real else {})
    assert got.idempotency == (1 if applied else 0)


def test_a_row_retried_after_a_lost_response_is_counted_once(syncperf_capture: Capture) -> None:
    rows = [
        {"assumedMasterState": doc("c", "old"), "newDocumentState": doc("c", "mine")},
        {"assumedMasterState": doc("d", "old"), "newDocumentState": doc("d", "new")},
    ]
    run(rxdb.Push(), rows, [], entity="todo")  # applied; the response is lost
    run(rxdb.Push(), rows, [doc("c", "mine"), doc("d", "new")], entity="todo")  # the retry
    got = recorded(syncperf_capture)
    assert got.items == {("todo", "updated"): 2}
    assert got.idempotency == 1
    assert got.conflicts == {}

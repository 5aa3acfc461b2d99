"""CouchDB ``_bulk_docs``, ``_revs_diff``, ``_changes`` and ``_bulk_get``, from the API shapes."""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import syncperf
from syncperf.adapters import couchdb
from syncperf.testing import Capture, capture
from tests._adapters import BULK, BULK_RESPONSE, recorded, run, span_attributes


def test_bulk_docs_counts_docs_by_type_and_change(syncperf_capture: Capture) -> None:
    run(couchdb.BulkDocs(), BULK, BULK_RESPONSE)
    got = recorded(syncperf_capture)
    assert got.batches == [(1, 4)]
    assert got.items == {
        ("todo", "created"): 1,
        ("todo", "updated"): 1,
        ("list", "deleted"): 1,
        ("note", "updated"): 1,
    }
    assert got.conflicts == {("todo", "rejected"): 1}
    assert got.outcomes == {"conflict": 1}
    assert span_attributes(syncperf_capture)["sync.couchdb.rejected_docs"] == 1


def test_bulk_docs_entity_callback_gets_the_id_and_document(syncperf_capture: Capture) -> None:
    adapter = couchdb.BulkDocs(entity=lambda doc_id, doc: doc_id.split(":")[0])
    run(adapter, BULK, BULK_RESPONSE)
    got = recorded(syncperf_capture)
    assert got.items[("list", "deleted")] == 1
    assert got.conflicts == {("todo", "rejected"): 1}


def test_bulk_docs_replication_uses_the_revision_generation(syncperf_capture: Capture) -> None:
    body = {
        "new_edits": False,
        "docs": [
            {"_id": "a", "_rev": "1-x", "type": "t"},
            {"_id": "b", "_rev": "5-y", "type": "t"},
            {"_id": "c", "_rev": "2-z", "type": "t", "_deleted": True},
        ],
    }
    run(couchdb.BulkDocs(), body, [])
    got = recorded(syncperf_capture)
    assert got.items == {("t", "created"): 1, ("t", "updated"): 1, ("t", "deleted"): 1}


def test_bulk_docs_conflicts_are_matched_by_id_when_results_are_reordered(
    syncperf_capture: Capture,
) -> None:
    response = [{"id": "list:1", "error": "conflict"}, {"id": "todo:1", "ok": True, "rev": "1-a"}]
    run(couchdb.BulkDocs(), BULK, response)
    assert recorded(syncperf_capture).conflicts == {("list", "rejected"): 1}


def test_revs_diff_revisions_already_present_are_on_the_span_not_a_hit(
    syncperf_capture: Capture,
) -> None:
    # PouchDB offers back revisions it just pulled (a read-only device's push half): normal
    # replication, not a client that missed a response
    request = {"190f": ["3-bb72", "4-10265", "5-067a", "6-ffff"], "aaaa": ["1-x"]}
    response = {"190f": {"missing": ["3-bb72", "5-067a"], "possible_ancestors": ["4-10265"]}}
    run(couchdb.RevsDiff(), request, response)
    got = recorded(syncperf_capture)
    assert got.batches == [(1, 5)]
    assert got.idempotency == 0
    assert span_attributes(syncperf_capture)["sync.couchdb.revs_present"] == 3


def test_revs_diff_with_everything_missing_is_no_duplicate(syncperf_capture: Capture) -> None:
    run(couchdb.RevsDiff(), {"a": ["1-x", "2-y"]}, {"a": {"missing": ["1-x", "2-y"]}})
    assert recorded(syncperf_capture).idempotency == 0


def test_changes_counts_results_by_change(syncperf_capture: Capture) -> None:
    response = {
        "results": [
            {
                "seq": "1-g1",
                "id": "todo:1",
                "changes": [{"rev": "1-a"}],
                "doc": {"_id": "todo:1", "type": "todo"},
            },
            {
                "seq": "2-g1",
                "id": "todo:2",
                "changes": [{"rev": "4-b"}],
                "doc": {"_id": "todo:2", "type": "todo"},
            },
            {
                "seq": "3-g1",
                "id": "x",
                "changes": [{"rev": "2-c"}],
                "deleted": True,
                "doc": {"_id": "x", "_deleted": True},
            },
        ],
        "last_seq": "3-g1",
        "pending": 12,
    }
    run(couchdb.Changes(), None, response, operation="pull")
    got = recorded(syncperf_capture)
    assert got.batches == [(1, 3)]
    assert got.items == {("todo", "created"): 1, ("todo", "updated"): 1, (None, "deleted"): 1}
    assert span_attributes(syncperf_capture)["sync.couchdb.pending"] == 12


def test_changes_without_docs_deliver_no_items_yet(syncperf_capture: Capture) -> None:
    # a replicating client fetches the revisions it lacks through _bulk_get, counted there
    response = {"results": [{"seq": 1, "id": "todo:9", "changes": [{"rev": "1-a"}]}], "last_seq": 1}
    run(couchdb.Changes(), None, response, operation="pull")
    got = recorded(syncperf_capture)
    assert got.items == {}
    assert got.batches == [(1, 1)]


def test_changes_reads_every_leaf_revision_and_counts_conflicted_documents(
    syncperf_capture: Capture,
) -> None:
    response = {
        "results": [
            {"seq": 1, "id": "todo:1", "changes": [{"rev": "2-a"}, {"rev": "2-b"}]},
            {"seq": 2, "id": "todo:2", "changes": [{"rev": "3-c"}]},
            {"seq": 3, "id": "todo:3", "changes": [{"rev": "1-d"}, {"rev": "4-e"}]},
        ],
        "last_seq": 3,
    }
    run(couchdb.Changes(), None, response, operation="pull")
    assert span_attributes(syncperf_capture)["sync.couchdb.conflicted_docs"] == 2


def test_changes_counts_a_resolved_conflict_while_its_deleted_leaf_is_listed(
    syncperf_capture: Capture,
) -> None:
    # The documented limit: PouchDB resolves a conflict by deleting the losing revision, and
    # style=all_docs lists that deleted leaf beside the live winner without marking it, so
    # the document still counts (docs/adapters.md, "CouchDB conflicts")
    response = {
        "results": [
            {"seq": 5, "id": "todo:1", "changes": [{"rev": "2-live"}, {"rev": "3-deleted"}]},
            {
                "seq": 6,
                "id": "todo:2",
                "changes": [{"rev": "4-x"}, {"rev": "3-y"}],
                "deleted": True,
            },
        ],
    }
    run(couchdb.Changes(), None, response, operation="pull")
    assert span_attributes(syncperf_capture)["sync.couchdb.conflicted_docs"] == 1


def test_bulk_get_counts_the_revisions_actually_pulled(syncperf_capture: Capture) -> None:
    request = {"docs": [{"id": "todo:1", "rev": "1-a"}, {"id": "todo:2", "rev": "3-b"}]}
    response = {
        "results": [
            {"id": "todo:1", "docs": [{"ok": {"_id": "todo:1", "_rev": "1-a", "type": "todo"}}]},
            {
                "id": "todo:2",
                "docs": [
                    {"ok": {"_id": "todo:2", "_rev": "3-b", "_deleted": True}},
                    {"ok": {"_id": "todo:2", "_rev": "2-z", "type": "todo"}},
                ],
            },
            {"id": "gone", "docs": [{"error": {"id": "gone", "rev": "1-x", "error": "not_found"}}]},
        ]
    }
    run(couchdb.BulkGet(id_separator=":"), request, response, operation="pull")
    got = recorded(syncperf_capture)
    assert got.batches == [(1, 3)]
    assert got.items == {
        ("todo", "created"): 1,
        ("todo", "deleted"): 1,
        ("todo", "updated"): 1,
    }
    assert span_attributes(syncperf_capture)["sync.couchdb.missing_docs"] == 1


def test_a_replicated_revision_that_leaves_a_document_conflicted_is_a_conflict(
    syncperf_capture: Capture,
) -> None:
    leaves = {"todo:1": 0, "todo:2": 0}
    body = {
        "new_edits": False,
        "docs": [
            {"_id": "todo:1", "_rev": "2-mine", "type": "todo"},
            {"_id": "todo:2", "_rev": "2-next", "type": "todo"},
        ],
    }
    adapter = couchdb.BulkDocs(open_conflicts=lambda doc_id: leaves[doc_id])
    with syncperf.sync_operation("push") as op:
        adapter.on_request(op, body)
        leaves["todo:1"] = 1  # the handler stored 2-mine beside the server's 2-theirs
        adapter.on_response(op, [])
    got = recorded(syncperf_capture)
    assert got.conflicts == {("todo", None): 1}
    assert got.outcomes == {"conflict": 1}
    assert got.items == {("todo", "updated"): 2}


def test_a_deleted_document_keeps_its_entity_from_its_id(syncperf_capture: Capture) -> None:
    body = {"docs": [{"_id": "todo:1", "_rev": "3-a", "_deleted": True}]}
    run(couchdb.BulkDocs(id_separator=":"), body, [{"ok": True, "id": "todo:1", "rev": "4-b"}])
    response = {
        "results": [
            {
                "seq": 4,
                "id": "todo:1",
                "deleted": True,
                "changes": [{"rev": "4-b"}],
                "doc": {"_id": "todo:1", "_rev": "4-b", "_deleted": True},
            }
        ]
    }
    run(couchdb.Changes(id_separator=":"), None, response, operation="pull")
    assert recorded(syncperf_capture).items == {("todo", "deleted"): 2}


@settings(max_examples=150, deadline=None)
@given(
    docs=st.lists(
        st.tuples(
            st.sampled_from(["todo", "list", None]),
            st.sampled_from([None, "1-a", "3-b"]),
            st.booleans(),
            st.sampled_from([None, "conflict", "forbidden"]),
        ),
        max_size=20,
    )
)
def test_bulk_docs_counts_match_a_direct_computation(
    docs: list[tuple[str | None, str | None, bool, str | None]],
) -> None:
    body: list[dict[str, Any]] = []
    response: list[dict[str, Any]] = []
    items: Counter[tuple[str | None, str | None]] = Counter()
    conflicts: Counter[tuple[str | None, str | None]] = Counter()
    for index, (kind, rev, deleted, error) in enumerate(docs):
        document: dict[str, Any] = {"_id": f"d{index}"}
        if kind:
            document["type"] = kind
        if rev:
            document["_rev"] = rev
        if deleted:
            document["_deleted"] = True
        body.append(document)
        items[(kind, "deleted" if deleted else "updated" if rev else "created")] += 1
        response.append({"id": f"d{index}", "error": error} if error else {"id": f"d{index}"})
        if error == "conflict":
            conflicts[(kind, "rejected")] += 1
    with capture() as cap:
        run(couchdb.BulkDocs(), {"docs": body}, response)
        got = recorded(cap)
    assert got.items == dict(items)
    assert got.conflicts == dict(conflicts)
    assert got.batches == [(1, len(docs))]

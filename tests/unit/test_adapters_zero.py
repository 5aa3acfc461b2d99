"""Zero push: CRUD and custom mutators, per-mutation results."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import syncperf
from syncperf.adapters import zero
from syncperf.testing import Capture, capture
from tests._adapters import recorded, run, span_attributes


def crud(mutation_id: int, client: str, *ops: tuple[str, str]) -> dict[str, Any]:
    return {
        "type": "crud",
        "id": mutation_id,
        "clientID": client,
        "name": "_zero_crud",
        "args": [
            {
                "ops": [
                    {"op": op, "tableName": table, "primaryKey": ["id"], "value": {"id": "x"}}
                    for op, table in ops
                ]
            }
        ],
        "timestamp": 1.0,
    }


def custom(mutation_id: int, client: str, name: str) -> dict[str, Any]:
    return {
        "type": "custom",
        "id": mutation_id,
        "clientID": client,
        "name": name,
        "args": [{"id": "i1"}],
        "timestamp": 1.0,
    }


def push_body(*mutations: dict[str, Any]) -> dict[str, Any]:
    return {
        "clientGroupID": "cg",
        "mutations": list(mutations),
        "pushVersion": 1,
        "timestamp": 1.0,
        "requestID": "r1",
    }


def result(mutation_id: int, client: str, **outcome: Any) -> dict[str, Any]:
    return {"id": {"id": mutation_id, "clientID": client}, "result": outcome}


def test_crud_ops_are_items_by_table_and_change(syncperf_capture: Capture) -> None:
    body = push_body(
        crud(1, "c", ("insert", "issue"), ("update", "issue"), ("delete", "comment")),
        crud(2, "c", ("upsert", "label")),
    )
    run(zero.Push(), body, {"mutations": [result(1, "c"), result(2, "c")]})
    got = recorded(syncperf_capture)
    assert got.batches == [(1, 2)]
    assert got.items == {
        ("issue", "created"): 1,
        ("issue", "updated"): 1,
        ("comment", "deleted"): 1,
        ("label", None): 1,
    }
    assert got.conflicts == {}


def test_the_older_crud_shape_with_entity_type_is_read_too(syncperf_capture: Capture) -> None:
    mutation = {
        "id": 1,
        "clientID": "c",
        "name": "_zero_crud",
        "timestamp": 1,
        "args": [
            {
                "ops": [
                    {"op": "create", "entityType": "issue", "id": {}, "value": {}},
                    {"op": "set", "entityType": "issue", "id": {}, "value": {}},
                ]
            }
        ],
    }
    run(zero.Push(), push_body(mutation), {"mutations": [result(1, "c", data={})]})
    assert recorded(syncperf_capture).items == {("issue", "created"): 1, ("issue", None): 1}


def test_custom_mutators_count_under_their_namespace(syncperf_capture: Capture) -> None:
    body = push_body(
        custom(1, "c", "issue.create"), custom(2, "c", "issue|update"), custom(3, "c", "ping")
    )
    answer = {"mutations": [result(1, "c"), result(2, "c"), result(3, "c")]}
    run(zero.Push(change={"issue.create": "created"}), body, answer)
    assert recorded(syncperf_capture).items == {
        ("issue", "created"): 1,
        ("issue", None): 1,
        ("ping", None): 1,
    }


def test_app_errors_are_conflicts_of_the_mutations_entity(syncperf_capture: Capture) -> None:
    body = push_body(custom(1, "c", "issue.update"), crud(2, "c", ("update", "comment")))
    response = {
        "mutations": [
            result(1, "c", error="app", message="stale"),
            result(2, "c", error="app", details={"why": "gone"}),
        ]
    }
    run(zero.Push(), body, response)
    got = recorded(syncperf_capture)
    assert got.conflicts == {("issue", "rejected"): 1, ("comment", "rejected"): 1}
    assert got.outcomes == {"conflict": 1}


def test_already_processed_mutations_are_an_idempotency_hit(syncperf_capture: Capture) -> None:
    body = push_body(custom(1, "c", "a.x"), custom(2, "c", "a.x"), custom(3, "c", "a.x"))
    response = {
        "mutations": [
            result(1, "c", error="alreadyProcessed"),
            result(2, "c"),
            result(3, "c", error="oooMutation"),
        ]
    }
    run(zero.Push(), body, response)
    got = recorded(syncperf_capture)
    assert got.idempotency == 1
    assert got.conflicts == {}
    attributes = span_attributes(syncperf_capture)
    assert attributes["sync.zero.already_processed"] == 1
    assert attributes["sync.zero.out_of_order"] == 1


def test_the_last_mutation_id_callback_keeps_duplicates_out_of_items(
    syncperf_capture: Capture,
) -> None:
    body = push_body(custom(4, "c1", "a.x"), custom(5, "c1", "a.x"), custom(1, "c2", "a.x"))
    run(zero.Push(last_mutation_id=lambda group, client: {"c1": 4}.get(client)), body)
    got = recorded(syncperf_capture)
    assert got.items == {("a", None): 2}
    assert got.idempotency == 1


def test_a_mutation_repeated_within_a_push_counts_once(syncperf_capture: Capture) -> None:
    # the server applies (c1, 5) once and answers its copy alreadyProcessed
    body = push_body(custom(5, "c1", "issue.create"), custom(5, "c1", "issue.create"))
    answer = {"mutations": [result(5, "c1"), result(5, "c1", error="alreadyProcessed")]}
    run(zero.Push(last_mutation_id=lambda group, client: 4), body, answer)
    got = recorded(syncperf_capture)
    assert got.items == {("issue", None): 1}
    assert got.batches == [(1, 2)]
    assert got.idempotency == 1
    assert span_attributes(syncperf_capture)["sync.zero.duplicate_mutations"] == 1


def test_a_mutation_below_one_the_push_already_carried_is_a_duplicate(
    syncperf_capture: Capture,
) -> None:
    ids = [(5, "c1"), (6, "c1"), (5, "c1"), (1, "c2")]
    body = push_body(*(custom(i, c, "issue.create") for i, c in ids))
    run(zero.Push(last_mutation_id=lambda group, client: {"c1": 4}.get(client)), body)
    got = recorded(syncperf_capture)
    assert got.items == {("issue", None): 3}  # 5 again after 6: the server took 5 already
    assert span_attributes(syncperf_capture)["sync.zero.duplicate_mutations"] == 1


def test_push_level_errors_are_set_on_the_span(syncperf_capture: Capture) -> None:
    run(zero.Push(), push_body(), {"error": "unsupportedPushVersion"})
    run(zero.Push(), push_body(), ["error", {"kind": "PushFailed", "message": "x"}])
    got = recorded(syncperf_capture)
    assert got.dropped == {}
    values = [dict(s.attributes or {})["sync.zero.push_error"] for s in syncperf_capture.spans()]
    assert values == ["unsupportedPushVersion", "PushFailed"]


@pytest.mark.parametrize(
    ("answer", "error_type"),
    [
        ({"error": "unsupportedPushVersion"}, "unsupportedPushVersion"),
        ({"error": "http", "status": 500, "details": "boom"}, "http"),
        (["error", {"kind": "InvalidPush", "message": "x"}], "InvalidPush"),
        (["error", {"kind": "no such kind"}], "_OTHER"),
    ],
)
def test_a_refused_push_counts_no_items_and_is_an_error(
    answer: Any, error_type: str, syncperf_capture: Capture
) -> None:
    body = push_body(crud(1, "c", ("insert", "issue")), crud(2, "c", ("insert", "issue")))
    run(zero.Push(last_mutation_id=lambda group, client: 1), body, answer)
    got = recorded(syncperf_capture)
    assert got.items == {}  # nothing was applied
    assert got.idempotency == 0
    assert got.batches == [(1, 2)]
    assert got.outcomes == {"error": 1}
    (point,) = syncperf_capture.points("sync.operation.duration")
    assert (point.attributes or {})["error.type"] == error_type
    assert "sync.zero.duplicate_mutations" not in span_attributes(syncperf_capture)


@pytest.mark.parametrize("reason", ["database", "parse", "oooMutation", "internal"])
def test_zero_servers_bare_push_failed_answer_is_an_error_without_items(
    reason: str, syncperf_capture: Capture
) -> None:
    failed = {
        "kind": "PushFailed",
        "origin": "server",
        "reason": reason,
        "message": "duplicate key; key (email)=(alice@example.com)",
        "mutationIDs": [{"id": 1, "clientID": "c"}],
    }
    run(zero.Push(), push_body(crud(1, "c", ("insert", "issue"))), failed)
    got = recorded(syncperf_capture)
    assert (got.items, got.dropped, got.outcomes) == ({}, {}, {"error": 1})
    (point,) = syncperf_capture.points("sync.operation.duration")
    assert (point.attributes or {})["error.type"] == "PushFailed"
    assert span_attributes(syncperf_capture)["sync.zero.push_error"] == "PushFailed"


def test_the_message_of_a_push_failed_answer_is_never_exported(
    syncperf_capture: Capture,
) -> None:
    failed = {"kind": "PushFailed", "origin": "server", "reason": "database"}
    failed |= {"message": "key (email)=(alice@example.com)", "mutationIDs": []}
    run(zero.Push(), push_body(custom(1, "c", "issue.create")), failed)
    exported = repr(span_attributes(syncperf_capture)) + repr(syncperf_capture.metrics())
    assert "alice" not in exported


def test_a_push_whose_handler_raised_counts_no_items(syncperf_capture: Capture) -> None:
    @syncperf.instrument_sync("push", adapter=zero.Push())
    def push(body: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("database down")

    with pytest.raises(RuntimeError):
        push(push_body(crud(1, "c", ("insert", "issue"))))
    got = recorded(syncperf_capture)
    assert got.items == {}
    assert got.batches == [(1, 1)]


def cleanup(client: str, up_to: int) -> dict[str, Any]:
    """zero-cache's housekeeping mutation (ackMutationResponses), POSTed to the push URL."""
    arg = {"type": "single", "clientGroupID": "cg", "clientID": client, "upToMutationID": up_to}
    return {
        "type": "custom",
        "id": 0,
        "clientID": client,
        "name": "_zero_cleanupResults",
        "args": [arg],
        "timestamp": 2.0,
    }


@pytest.mark.parametrize("last_id", [None, 7], ids=["no callback", "last_mutation_id"])
def test_zero_caches_cleanup_mutation_is_no_item_and_no_idempotency_hit(
    last_id: int | None, syncperf_capture: Capture
) -> None:
    adapter = zero.Push(last_mutation_id=None if last_id is None else lambda g, c: last_id)
    run(adapter, push_body(cleanup("c1", 7)), {"mutations": []})
    got = recorded(syncperf_capture)
    assert (got.items, got.idempotency, got.dropped) == ({}, 0, {})


def test_a_cleanup_push_still_counts_as_a_push_without_a_batch_size(
    syncperf_capture: Capture,
) -> None:
    run(zero.Push(), push_body(cleanup("c1", 7)), {"mutations": []})
    got = recorded(syncperf_capture)
    assert (got.outcomes, got.batch_count) == ({"success": 1}, 0)
    assert span_attributes(syncperf_capture)["sync.zero.cleanup"] == 1


@settings(max_examples=40, deadline=None)
@given(order=st.lists(st.booleans(), min_size=1, max_size=8))
def test_cleanup_mutations_beside_client_mutations_are_left_out_of_batch_and_items(
    order: list[bool],
) -> None:
    mutations = [
        cleanup("c", 3) if is_cleanup else custom(order[:i].count(False) + 1, "c", "issue.create")
        for i, is_cleanup in enumerate(order)
    ]
    clients = order.count(False)
    answer = {"mutations": [result(i + 1, "c") for i in range(clients)]}
    with capture() as cap:
        run(zero.Push(last_mutation_id=lambda g, c: 0), push_body(*mutations), answer)
        got = recorded(cap)
    assert got.items == ({("issue", None): clients} if clients else {})
    assert got.batches == ([(1, clients)] if clients else [])
    assert got.idempotency == 0


@settings(max_examples=80, deadline=None)
@given(
    mutations=st.lists(
        st.tuples(
            st.sampled_from(["c1", "c2"]),
            st.one_of(
                st.sampled_from(["issue.create", "label.add"]),
                st.lists(
                    st.tuples(
                        st.sampled_from(list(zero._CRUD_CHANGES)), st.sampled_from(["t", "u"])
                    ),
                    min_size=1,
                    max_size=3,
                ),
            ),
            st.sampled_from([None, "app", "alreadyProcessed"]),
        ),
        max_size=15,
    )
)
def test_counts_match_a_direct_computation(mutations: list[tuple[str, Any, str | None]]) -> None:
    sent, results = [], []
    items: Counter[tuple[str | None, str | None]] = Counter()
    conflicts: Counter[tuple[str | None, str | None]] = Counter()
    for index, (client, what, error) in enumerate(mutations):
        added: list[tuple[str | None, str | None]] = []
        if isinstance(what, str):
            sent.append(custom(index, client, what))
            entity: str = what.split(".")[0]
            added.append((entity, None))
        else:
            sent.append(crud(index, client, *what))
            entity = what[0][1]
            added += [(table, zero._CRUD_CHANGES[op]) for op, table in what]
        for key in added:
            items[key] += 1
        results.append(result(index, client, error=error) if error else result(index, client))
        if error == "app":
            conflicts[(entity, "rejected")] += 1
        if error is not None:  # rejected or applied by an earlier push: not this one's item
            for key in added:
                items[key] -= 1
    with capture() as cap:
        run(zero.Push(), push_body(*sent), {"mutations": results})
        got = recorded(cap)
    assert got.items == {key: n for key, n in items.items() if n}
    assert got.conflicts == dict(conflicts)
    assert got.batches == [(1, len(mutations))]
    assert got.idempotency == (1 if any(e == "alreadyProcessed" for *_, e in mutations) else 0)


# --- what zero-server applied: its PushProcessor stops at an oooMutation (older releases at any
# error) and answers nothing after it; an app error's mutator writes are rolled back


def issues(*ids: int) -> dict[str, Any]:
    return push_body(*(custom(i, "c1", "issue.create") for i in ids))


@pytest.mark.parametrize("last_id", [None, 0], ids=["no callback", "last_mutation_id"])
def test_mutations_from_an_out_of_order_one_on_are_not_items(
    last_id: int | None, syncperf_capture: Capture
) -> None:
    answer = {"mutations": [result(1, "c1"), result(2, "c1", error="oooMutation", details="x")]}
    adapter = zero.Push() if last_id is None else zero.Push(last_mutation_id=lambda g, c: last_id)
    run(adapter, issues(1, 2, 3), answer)
    got = recorded(syncperf_capture)
    assert got.items == {("issue", None): 1}
    assert got.batches == [(1, 3)]
    assert got.outcomes == {"success": 1}
    attributes = span_attributes(syncperf_capture)
    assert attributes["sync.zero.out_of_order"] == 1
    assert attributes["sync.zero.unanswered"] == 1


def test_an_app_error_is_a_conflict_and_not_an_item(syncperf_capture: Capture) -> None:
    answer = {"mutations": [result(1, "c1"), result(2, "c1", error="app", details="x")]}
    run(zero.Push(), issues(1, 2, 3), answer)
    got = recorded(syncperf_capture)
    assert got.items == {("issue", None): 1}  # 3: never processed (older servers stop there)
    assert got.conflicts == {("issue", "rejected"): 1}


def test_an_already_processed_mutation_is_not_an_item_again(syncperf_capture: Capture) -> None:
    answer = {"mutations": [result(1, "c1", error="alreadyProcessed"), result(2, "c1")]}
    run(zero.Push(), issues(1, 2), answer)
    got = recorded(syncperf_capture)
    assert got.items == {("issue", None): 1}
    assert got.idempotency == 1


@pytest.mark.parametrize(
    "answer",
    [None, {"mutations": [result(7, "c1", error="oooMutation")]}],
    ids=["no body", "oooMutation"],
)
def test_a_mutation_past_the_clients_next_id_and_all_after_it_are_not_items(
    answer: Any, syncperf_capture: Capture
) -> None:
    run(zero.Push(last_mutation_id=lambda group, client: 5), issues(7, 8), answer)
    got = recorded(syncperf_capture)
    assert got.items == {}
    assert got.batches == [(1, 2)]
    assert span_attributes(syncperf_capture)["sync.zero.future_mutations"] == 2


def test_a_client_unknown_to_the_callback_starts_at_its_first_mutation(
    syncperf_capture: Capture,
) -> None:
    run(zero.Push(last_mutation_id=lambda group, client: None), issues(7, 8))
    assert recorded(syncperf_capture).items == {("issue", None): 2}


@settings(max_examples=60, deadline=None)
@given(
    ident=st.one_of(
        st.none(),
        st.integers(),
        st.dictionaries(
            st.sampled_from(["id", "clientID"]),
            st.one_of(st.integers(), st.text(max_size=3), st.lists(st.integers(), max_size=2)),
        ),
    ),
    error=st.sampled_from([None, "app", "alreadyProcessed", "oooMutation"]),
)
def test_any_response_id_is_read_or_an_unparseable_payload(ident: Any, error: str | None) -> None:
    entry = {"id": ident, "result": {} if error is None else {"error": error}}
    with capture(strict=False) as cap:
        run(zero.Push(), issues(1), {"mutations": [entry]})
        got = recorded(cap)
    assert set(got.dropped) <= {"unparseable_payload"}
    well_formed = ident == {"id": 1, "clientID": "c1"}
    assert got.items == ({("issue", None): 1} if well_formed and error is None else {})

"""Replicache push (v0, v1) and pull, from the documented request/response shapes."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import syncperf
from syncperf.adapters import replicache
from syncperf.testing import Capture, capture
from tests._adapters import PULL_V1_RESPONSE, PUSH_V1, recorded, run, span_attributes

PUSH_V0 = {
    "pushVersion": 0,
    "clientID": "c1",
    "mutations": [
        {"id": 1, "name": "createTodo", "args": {}, "timestamp": 1.0},
        {"id": 2, "name": "createTodo", "args": {}, "timestamp": 2.0},
    ],
}
TODO_ENTITY = {"createTodo": "todo", "updateTodo": "todo", "deleteTodo": "todo"}
TODO_CHANGE = {"createTodo": "created", "updateTodo": "updated", "deleteTodo": "deleted"}


def test_push_counts_mutations_per_mutator_name_by_default(syncperf_capture: Capture) -> None:
    run(replicache.Push(), PUSH_V1)
    got = recorded(syncperf_capture)
    assert got.batches == [(1, 3)]
    assert got.items == {("createTodo", None): 1, ("updateTodo", None): 1, ("deleteTodo", None): 1}
    assert got.idempotency == 0


def test_push_maps_mutators_to_entities_and_change_types(syncperf_capture: Capture) -> None:
    run(replicache.Push(entity=TODO_ENTITY, change=TODO_CHANGE), PUSH_V1)
    got = recorded(syncperf_capture)
    assert got.items == {("todo", "created"): 1, ("todo", "updated"): 1, ("todo", "deleted"): 1}


def test_push_mapping_callables_are_called_once_per_mutator_name(
    syncperf_capture: Capture,
) -> None:
    calls: list[str] = []

    def entity(mutator: str) -> str:
        calls.append(mutator)
        return "todo"

    adapter = replicache.Push(entity=entity)
    run(adapter, PUSH_V1)
    run(adapter, PUSH_V1)
    assert sorted(calls) == ["createTodo", "deleteTodo", "updateTodo"]
    assert recorded(syncperf_capture).items == {("todo", None): 6}


def test_push_v1_mutations_at_or_below_the_last_mutation_id_are_duplicates(
    syncperf_capture: Capture,
) -> None:
    asked: list[tuple[Any, str]] = []

    def last_mutation_id(group: Any, client: str) -> int | None:
        asked.append((group, client))
        return {"c1": 7}.get(client)

    run(replicache.Push(last_mutation_id=last_mutation_id, entity=TODO_ENTITY), PUSH_V1)
    got = recorded(syncperf_capture)
    assert asked == [("cg1", "c1"), ("cg1", "c2")]  # once per client, not per mutation
    assert got.batches == [(1, 3)]
    assert got.items == {("todo", None): 2}  # mutation 7 of c1 was already processed
    # Replicache resends every pending mutation until a pull confirms it: not a lost answer
    assert got.idempotency == 0
    assert span_attributes(syncperf_capture)["sync.replicache.duplicate_mutations"] == 1


def test_push_v0_passes_no_group_and_the_body_client(syncperf_capture: Capture) -> None:
    asked: list[tuple[Any, str]] = []

    def last_mutation_id(group: Any, client: str) -> int:
        asked.append((group, client))
        return 2

    run(replicache.Push(last_mutation_id=last_mutation_id), PUSH_V0)
    got = recorded(syncperf_capture)
    assert asked == [(None, "c1")]
    assert got.items == {}
    assert got.idempotency == 0
    assert got.batches == [(1, 2)]


def test_a_mutation_repeated_within_a_push_counts_once(syncperf_capture: Capture) -> None:
    # the server applies (c1, 5) once: the first copy advances the client's last mutation ID
    mutation = {"id": 5, "clientID": "c1", "name": "createTodo", "args": {}}
    body = {"pushVersion": 1, "clientGroupID": "g", "mutations": [mutation] * 3}
    run(replicache.Push(last_mutation_id=lambda group, client: 4), body, {})
    got = recorded(syncperf_capture)
    assert got.items == {("createTodo", None): 1}
    assert got.batches == [(1, 3)]
    assert got.idempotency == 0  # a resend, as for ids at or below the callback's answer
    assert span_attributes(syncperf_capture)["sync.replicache.duplicate_mutations"] == 2


def test_mutations_out_of_order_or_from_the_future_are_not_items(
    syncperf_capture: Capture,
) -> None:
    # Replicache's push algorithm: an id below last + 1 was processed; one above it is from
    # the future, and the server stops there (the client resends the gap and what follows)
    ids = [("c1", 5), ("c1", 6), ("c1", 5), ("c2", 1), ("c1", 9), ("c1", 7), ("c2", 2)]
    mutations = [{"id": i, "clientID": c, "name": "createTodo", "args": {}} for c, i in ids]
    body = {"pushVersion": 1, "clientGroupID": "g", "mutations": mutations}
    run(replicache.Push(last_mutation_id=lambda group, client: {"c1": 4}.get(client)), body, {})
    got = recorded(syncperf_capture)
    assert got.items == {("createTodo", None): 3}  # c1's 5 and 6, c2's 1 (unknown: its first)
    assert got.batches == [(1, 7)]
    attributes = span_attributes(syncperf_capture)
    assert attributes["sync.replicache.duplicate_mutations"] == 1
    assert attributes["sync.replicache.future_mutations"] == 3  # c1's 9 and all after it


def test_push_reads_nothing_but_an_error_from_the_response(syncperf_capture: Capture) -> None:
    run(replicache.Push(), PUSH_V1, {"anything": "at all"})
    got = recorded(syncperf_capture)
    assert got.dropped == {}
    assert sum(got.items.values()) == 3
    assert got.outcomes == {"success": 1}


@pytest.mark.parametrize(
    ("answer", "error_type"),
    [
        ({"error": "VersionNotSupported", "versionType": "schema"}, "VersionNotSupported"),
        ({"error": "ClientStateNotFound"}, "ClientStateNotFound"),
        ({"error": "a message from the server"}, "_OTHER"),
    ],
)
def test_a_refused_push_counts_no_items_and_is_an_error(
    answer: dict[str, Any], error_type: str, syncperf_capture: Capture
) -> None:
    # Replicache 15 reads these from the push response (and asks the app to update); the
    # server applied nothing
    adapter = replicache.Push(last_mutation_id=lambda group, client: 7, entity=TODO_ENTITY)
    run(adapter, PUSH_V1, answer)
    got = recorded(syncperf_capture)
    assert got.items == {}
    assert got.batches == [(1, 3)]
    assert got.outcomes == {"error": 1}
    (point,) = syncperf_capture.points("sync.operation.duration")
    assert (point.attributes or {})["error.type"] == error_type
    attributes = span_attributes(syncperf_capture)
    expected = "_other" if error_type == "_OTHER" else answer["error"]
    assert attributes["sync.replicache.error"] == expected
    assert "sync.replicache.duplicate_mutations" not in attributes


def test_a_push_whose_handler_raised_counts_no_items(syncperf_capture: Capture) -> None:
    @syncperf.instrument_sync("push", adapter=replicache.Push())
    def push(body: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("database down")

    with pytest.raises(RuntimeError):
        push(PUSH_V1)
    got = recorded(syncperf_capture)
    assert got.items == {}
    assert got.batches == [(1, 3)]


def test_pull_counts_patch_operations_by_key_prefix(syncperf_capture: Capture) -> None:
    request = {"pullVersion": 1, "clientGroupID": "cg1", "cookie": 40, "profileID": "p"}
    run(replicache.Pull(), request, PULL_V1_RESPONSE, operation="pull")
    got = recorded(syncperf_capture)
    assert got.batches == [(1, 5)]
    assert got.items == {("todo", None): 2, ("list", "deleted"): 1, (None, None): 1}
    assert span_attributes(syncperf_capture)["sync.replicache.clear"] is True


def test_pull_counts_replicache_15s_internal_update_op(syncperf_capture: Capture) -> None:
    # PatchOperationInternal: {op: "update", key, merge?, constrain?} changes an existing key
    response = {
        "cookie": 2,
        "lastMutationIDChanges": {},
        "patch": [
            {"op": "update", "key": "todo/t1", "merge": {"done": True}},
            {"op": "update", "key": "todo/t2", "constrain": ["id"]},
            {"op": "put", "key": "todo/t3", "value": {}},
        ],
    }
    run(replicache.Pull(), None, response, operation="pull")
    got = recorded(syncperf_capture)
    assert got.dropped == {}
    assert got.items == {("todo", "updated"): 2, ("todo", None): 1}
    assert got.batches == [(1, 3)]


def test_pull_v0_response_and_a_custom_key_mapping(syncperf_capture: Capture) -> None:
    response = {
        "cookie": "c",
        "lastMutationID": 3,
        "patch": [{"op": "put", "key": "a:1", "value": 1}],
    }
    run(replicache.Pull(entity=replicache.key_prefix(":")), None, response, operation="pull")
    assert recorded(syncperf_capture).items == {("a", None): 1}


def test_pull_error_response_is_an_error_not_a_successful_pull(syncperf_capture: Capture) -> None:
    run(replicache.Pull(), None, {"error": "ClientStateNotFound"}, operation="pull")
    got = recorded(syncperf_capture)
    assert got.items == {}
    assert got.dropped == {}
    assert got.outcomes == {"error": 1}
    (point,) = syncperf_capture.points("sync.operation.duration")
    assert (point.attributes or {})["error.type"] == "ClientStateNotFound"
    assert span_attributes(syncperf_capture)["sync.replicache.error"] == "ClientStateNotFound"


# --- hypothesis: valid payloads, counts equal a direct computation ------------------------

clients = st.sampled_from(["c1", "c2", "c3"])
mutators = st.sampled_from(["createTodo", "updateTodo", "deleteTodo", "renameList"])
mutations = st.lists(
    st.fixed_dictionaries(
        {"id": st.integers(0, 20), "clientID": clients, "name": mutators, "args": st.just({})}
    ),
    max_size=30,
)
last_ids = st.dictionaries(clients, st.integers(0, 20) | st.none())


def _applied(
    mutations: list[dict[str, Any]], last_ids: dict[str, int | None]
) -> list[dict[str, Any]]:
    """What Replicache's push algorithm (examples/replicache_server.py) runs: each client's
    next mutation (last + 1; any id for a client the server does not know), skipping the
    ones already processed and stopping at the first from the future."""
    last = dict(last_ids)
    applied = []
    for m in mutations:
        known = last.get(m["clientID"])
        if known is not None and m["id"] <= known:
            continue
        if known is not None and m["id"] > known + 1:
            break
        last[m["clientID"]] = m["id"]
        applied.append(m)
    return applied


@settings(max_examples=150, deadline=None)
@given(mutations=mutations, last_ids=last_ids)
def test_push_counts_match_a_direct_computation(
    mutations: list[dict[str, Any]], last_ids: dict[str, int | None]
) -> None:
    body = {"pushVersion": 1, "clientGroupID": "g", "mutations": mutations}
    adapter = replicache.Push(last_mutation_id=lambda group, client: last_ids.get(client))
    with capture() as cap:
        run(adapter, body)
        got = recorded(cap)

    expected = Counter((m["name"], None) for m in _applied(mutations, last_ids))
    assert got.items == dict(expected)
    assert got.batches == [(1, len(mutations))]
    assert got.idempotency == 0


patch_ops = st.lists(
    st.one_of(
        st.builds(
            lambda k: {"op": "put", "key": k, "value": {}},
            st.from_regex(r"/?[a-c]{1,2}(/x)?", fullmatch=True),
        ),
        st.builds(
            lambda k: {"op": "del", "key": k}, st.from_regex(r"/?[a-c]{1,2}(/x)?", fullmatch=True)
        ),
        st.just({"op": "clear"}),
    ),
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(patch=patch_ops)
def test_pull_counts_match_a_direct_computation(patch: list[dict[str, Any]]) -> None:
    with capture() as cap:
        run(replicache.Pull(), None, {"cookie": 1, "patch": patch}, operation="pull")
        got = recorded(cap)
    expected: Counter[tuple[str | None, str | None]] = Counter()
    for op in patch:
        if op["op"] != "clear":
            head = op["key"].split("/")[0]
            prefix = head if "/" in op["key"] and head else None  # "/a" has no prefix
            expected[(prefix, None if op["op"] == "put" else "deleted")] += 1
    assert got.items == dict(expected)
    assert got.batches == [(1, len(patch))]

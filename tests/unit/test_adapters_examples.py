"""The example servers under ``examples/``, driven by realistic client exchanges.

Each exchange: pulls, a push that conflicts with another client's change, and a push
retried after its response was lost. The same exchanges run against a real uvicorn in
``tests/integration/test_adapter_examples.py``.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from examples import (
    couchdb_server,
    powersync_server,
    replicache_server,
    rxdb_server,
    watermelondb_server,
    zero_server,
)

from syncperf.testing import Capture
from tests._adapters import recorded


async def watermelondb_exchange(client: httpx.AsyncClient) -> dict[str, Any]:
    """Two devices syncing tasks; returns what the clients saw."""
    seen: dict[str, Any] = {}
    # device A: first pull, then creates two tasks and a project
    first = (await client.get("/sync/pull", params={"schema_version": 1})).json()
    a_pulled_at = first["timestamp"]
    created = {
        "tasks": {"created": [{"id": "t1", "name": "Buy eggs"}, {"id": "t2", "name": "Call"}],
                  "updated": [], "deleted": []},
        "projects": {"created": [{"id": "p1", "name": "Home"}], "updated": [], "deleted": []},
    }  # fmt: skip
    response = await client.post("/sync/push", params={"last_pulled_at": a_pulled_at}, json=created)
    assert response.status_code == 200, response.text
    # device B: pulls everything, renames t1
    b_pull = (await client.get("/sync/pull")).json()
    seen["b_pull"] = b_pull["changes"]
    rename = {"tasks": {"created": [], "updated": [{"id": "t1", "name": "Buy 12 eggs"}],
                        "deleted": []}}  # fmt: skip
    await client.post("/sync/push", params={"last_pulled_at": b_pull["timestamp"]}, json=rename)
    # device A, offline since its first pull: edits t1 too and deletes t2 -> t1 conflicts
    stale = {"tasks": {"created": [], "updated": [{"id": "t1", "name": "Buy milk"}],
                       "deleted": ["t2"]}}  # fmt: skip
    conflict = await client.post("/sync/push", params={"last_pulled_at": a_pulled_at}, json=stale)
    seen["conflict"] = conflict.json()
    # device A: its first push timed out client-side, so it is retried as is
    retry = await client.post("/sync/push", params={"last_pulled_at": a_pulled_at}, json=created)
    assert retry.status_code == 200
    # device A pulls what changed since its first pull
    seen["a_pull"] = (await client.get("/sync/pull", params={"last_pulled_at": a_pulled_at})).json()
    return seen


async def replicache_exchange(client: httpx.AsyncClient) -> dict[str, Any]:
    """Two Replicache clients in two client groups; returns what the clients saw."""
    seen: dict[str, Any] = {}

    async def pull(group: str, cookie: Any) -> dict[str, Any]:
        body = {"pullVersion": 1, "clientGroupID": group, "cookie": cookie, "profileID": "p",
                "schemaVersion": ""}  # fmt: skip
        response = await client.post("/replicache/pull", json=body)
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def push(group: str, client_id: str, *mutations: tuple[int, str, dict[str, Any]]) -> None:
        body = {
            "pushVersion": 1, "clientGroupID": group, "profileID": "p", "schemaVersion": "",
            "mutations": [{"id": i, "clientID": client_id, "name": name, "args": args,
                           "timestamp": float(i)} for i, name, args in mutations],
        }  # fmt: skip
        response = await client.post("/replicache/push", json=body)
        assert response.status_code == 200, response.text

    first = await pull("g1", None)
    todo_1 = (1, "createTodo", {"id": "t1", "text": "eggs"})
    todo_2 = (2, "createTodo", {"id": "t2", "text": "milk"})
    await push("g1", "c1", todo_1, todo_2)
    seen["b_pull"] = await pull("g2", None)
    await push("g2", "c2", (1, "deleteTodo", {"id": "t1"}))
    # c1 edits t1, which c2 deleted: the server wins
    edit = (3, "updateTodo", {"id": "t1", "text": "12 eggs"})
    await push("g1", "c1", edit)
    # c1 never saw the confirmation: it resends every pending mutation
    await push("g1", "c1", todo_1, todo_2, edit)
    seen["a_pull"] = await pull("g1", first["cookie"])
    return seen


async def powersync_exchange(client: httpx.AsyncClient) -> dict[str, Any]:
    """Two PowerSync clients uploading CRUD transactions; returns what they saw."""
    seen: dict[str, Any] = {}

    async def upload(client_id: str, tx_id: int, *entries: tuple[str, str, str]) -> Any:
        batch = [{"op": op, "table": table, "id": row, "tx_id": tx_id, "data": {"v": tx_id}}
                 for op, table, row in entries]  # fmt: skip
        response = await client.post("/api/upload", json={"client_id": client_id, "batch": batch})
        assert response.status_code == 200, response.text
        return response.json()

    created = ("PUT", "lists", "l1"), ("PUT", "todos", "t1"), ("PUT", "todos", "t2")
    await upload("a", 1, *created)
    await upload("b", 1, ("DELETE", "todos", "t1"))
    # a edits t1, which b deleted: rejected (answered 200, as PowerSync asks)
    seen["rejected"] = await upload("a", 2, ("PATCH", "todos", "t1"), ("PATCH", "todos", "t2"))
    # a never saw the answer to its first upload: the transaction is retried
    await upload("a", 1, *created)
    return seen


def assert_powersync_metrics(cap: Capture, seen: dict[str, Any]) -> None:
    assert seen["rejected"] == {"rejected": {"todos": 1}}
    got = recorded(cap)
    assert got.items == {
        ("lists", "created"): 1,
        ("todos", "created"): 2,
        ("todos", "deleted"): 1,
        ("todos", "updated"): 2,  # one of them rejected
    }
    assert got.conflicts == {("todos", "rejected"): 1}
    assert got.idempotency == 1
    assert got.outcomes == {"success": 3, "conflict": 1}
    assert got.dropped == {}


async def zero_exchange(client: httpx.AsyncClient) -> dict[str, Any]:
    """Two Zero clients pushing custom mutators; returns what they saw."""
    seen: dict[str, Any] = {}

    async def push(client_id: str, *mutations: tuple[int, str, str]) -> Any:
        body = {
            "clientGroupID": f"g-{client_id}", "pushVersion": 1, "requestID": "r",
            "timestamp": 1, "mutations": [
                {"type": "custom", "id": i, "clientID": client_id, "name": name,
                 "args": [{"id": issue, "title": name}], "timestamp": 1}
                for i, name, issue in mutations
            ],
        }  # fmt: skip
        response = await client.post("/api/zero/push", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    created = (1, "issue.create", "i1"), (2, "issue.create", "i2")
    await push("a", *created)
    await push("b", (1, "issue.delete", "i1"))
    seen["refused"] = await push("a", (3, "issue.update", "i1"), (4, "issue.update", "i2"))
    # a never saw the answer to its first push: the cache server resends it
    seen["resent"] = await push("a", *created)
    return seen


def assert_zero_metrics(cap: Capture, seen: dict[str, Any]) -> None:
    assert seen["refused"]["mutations"][0]["result"]["error"] == "app"
    assert {m["result"].get("error") for m in seen["resent"]["mutations"]} == {"alreadyProcessed"}
    got = recorded(cap)
    assert got.items == {
        ("issue", "created"): 2,  # the resent push is all duplicates
        ("issue", "deleted"): 1,
        ("issue", "updated"): 1,  # the other refused: a conflict, not an item
    }
    assert got.conflicts == {("issue", "rejected"): 1}
    assert got.idempotency == 1
    assert got.outcomes == {"success": 3, "conflict": 1}
    assert got.dropped == {}


def client_for(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def assert_watermelondb_metrics(cap: Capture, seen: dict[str, Any]) -> None:
    assert seen["conflict"] == {"experimentalRejectedIds": {"tasks": ["t1"]}}
    assert [r["id"] for r in seen["b_pull"]["tasks"]["created"]] == ["t1", "t2"]
    got = recorded(cap)
    assert got.items == {
        # A's push (its retry is all duplicates), B's full pull, A's pull since its first
        ("tasks", "created"): 2 + 2 + 1,
        ("projects", "created"): 1 + 1 + 1,
        ("tasks", "updated"): 1 + 1,  # B's rename, A's stale edit (rejected)
        ("tasks", "deleted"): 1 + 1,  # A's push, then A's pull
    }
    assert got.conflicts == {("tasks", "rejected"): 1}
    assert got.idempotency == 1
    assert got.outcomes == {"success": 6, "conflict": 1}
    assert got.dropped == {}
    push_spans = [s for s in cap.spans() if s.name == "sync push"]
    assert [dict(s.attributes or {}).get("sync.outcome") for s in push_spans] == [
        "success", "success", "conflict", "success"
    ]  # fmt: skip


def assert_replicache_metrics(cap: Capture, seen: dict[str, Any]) -> None:
    assert [op["key"] for op in seen["b_pull"]["patch"] if op["op"] == "put"] == [
        "todo/t1",
        "todo/t2",
    ]
    assert seen["a_pull"]["lastMutationIDChanges"] == {"c1": 3}
    assert {"op": "del", "key": "todo/t1"} in seen["a_pull"]["patch"]
    got = recorded(cap)
    assert got.items == {
        ("todo", "created"): 2,  # c1's first push; its retry is all duplicates
        ("todo", "updated"): 1,  # c1's edit (it conflicted: the mutator dropped it)
        ("todo", "deleted"): 1 + 1,  # c2's push, then the del in c1's pull
        ("todo", None): 2 + 1,  # puts: c2's first pull, then t2 in c1's pull
    }
    assert got.conflicts == {("todo", "server_wins"): 1}
    assert got.idempotency == 0  # the retry's mutations are resends, on the span only
    assert got.outcomes == {"success": 6, "conflict": 1}
    assert got.dropped == {}


MEASURED_BY = pytest.mark.parametrize("measured_by", ["decorator", "middleware"])


@MEASURED_BY
async def test_watermelondb_example_exchange(measured_by: str, syncperf_capture: Capture) -> None:
    async with client_for(watermelondb_server.create_app(measured_by=measured_by)) as client:
        seen = await watermelondb_exchange(client)
    assert_watermelondb_metrics(syncperf_capture, seen)


@MEASURED_BY
async def test_replicache_example_exchange(measured_by: str, syncperf_capture: Capture) -> None:
    async with client_for(replicache_server.create_app(measured_by=measured_by)) as client:
        seen = await replicache_exchange(client)
    assert_replicache_metrics(syncperf_capture, seen)


@MEASURED_BY
async def test_powersync_example_exchange(measured_by: str, syncperf_capture: Capture) -> None:
    async with client_for(powersync_server.create_app(measured_by=measured_by)) as client:
        seen = await powersync_exchange(client)
    assert_powersync_metrics(syncperf_capture, seen)


@MEASURED_BY
async def test_zero_example_exchange(measured_by: str, syncperf_capture: Capture) -> None:
    async with client_for(zero_server.create_app(measured_by=measured_by)) as client:
        seen = await zero_exchange(client)
    assert_zero_metrics(syncperf_capture, seen)


@MEASURED_BY
async def test_replicache_example_counts_what_the_server_applied(
    measured_by: str, syncperf_capture: Capture
) -> None:
    # one push carrying mutation (c1, 1) three times, then (c1, 9) from the future
    store = replicache_server.Store()
    first = {"id": 1, "clientID": "c1", "name": "createTodo", "args": {"id": "a", "text": "x"},
             "timestamp": 1}  # fmt: skip
    gap = dict(first, id=9, args={"id": "b", "text": "y"})
    body = {"pushVersion": 1, "clientGroupID": "g", "profileID": "p", "schemaVersion": "1",
            "mutations": [first, dict(first), dict(first), gap]}  # fmt: skip
    async with client_for(replicache_server.create_app(store, measured_by=measured_by)) as client:
        assert (await client.post("/replicache/push", json=body)).status_code == 200
    assert sorted(store.entries) == ["todo/a"]
    got = recorded(syncperf_capture)
    assert got.items == {("todo", "created"): 1}
    assert got.batches == [(1, 4)]
    assert got.idempotency == 0


@MEASURED_BY
async def test_zero_example_counts_a_repeated_mutation_once(
    measured_by: str, syncperf_capture: Capture
) -> None:
    store = zero_server.Store()
    mutation = {"type": "custom", "id": 1, "clientID": "c1", "name": "issue.create",
                "args": [{"id": "i1", "title": "t"}], "timestamp": 1}  # fmt: skip
    body = {"clientGroupID": "g", "pushVersion": 1, "schemaVersion": 1, "requestID": "r",
            "timestamp": 1, "mutations": [mutation, dict(mutation)]}  # fmt: skip
    async with client_for(zero_server.create_app(store, measured_by=measured_by)) as client:
        answer = (await client.post("/api/zero/push", json=body)).json()
    assert [m["result"] for m in answer["mutations"]] == [{}, {"error": "alreadyProcessed"}]
    assert list(store.issues) == ["i1"]
    got = recorded(syncperf_capture)
    assert got.items == {("issue", "created"): 1}
    assert got.idempotency == 1


def test_the_examples_expose_an_app() -> None:
    for example in (
        couchdb_server, powersync_server, replicache_server, rxdb_server, watermelondb_server,
        zero_server,
    ):  # fmt: skip
        assert example.app.routes


def test_an_example_refuses_an_unknown_way_of_measuring() -> None:
    with pytest.raises(ValueError, match="measured_by"):
        rxdb_server.create_app(measured_by="magic")

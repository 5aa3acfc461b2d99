"""A Replicache backend (push v1, pull v1, global version strategy) measured by syncperf.

``syncperf.adapters.replicache`` reads the push and pull bodies: batch sizes, one item per
new mutation by entity and change type, and pulled patch operations by key prefix.
Mutations at or below the client's last mutation ID are resends (Replicache resends every
pending mutation until a pull confirms it): not items, and on the span only.

A client whose ``schemaVersion`` the server does not support is answered 200
``{"error": "VersionNotSupported"}``, as Replicache asks: nothing is applied, and syncperf
counts that push or pull as an error, with no items.

Conflicts are not on Replicache's wire (the server re-runs each mutator and decides), so
the one line of measurement code is in the mutator that detects one: updating a todo that
another client deleted. The server wins; the update is dropped and counted.

Run it::

    pip install "syncperf[demo]"
    uvicorn examples.replicache_server:app

State lives in memory (one store per ``create_app()``).
"""

from typing import Annotated, Any

from fastapi import Body, FastAPI

import syncperf
from syncperf.adapters import replicache
from syncperf.asgi import SyncPerfMiddleware, SyncRoute

__all__ = ["Store", "app", "create_app"]

MUTATOR_ENTITY = {"createTodo": "todo", "updateTodo": "todo", "deleteTodo": "todo"}
MUTATOR_CHANGE = {"createTodo": "created", "updateTodo": "updated", "deleteTodo": "deleted"}
SCHEMA_VERSIONS = ("", "1")
"""The client ``schemaVersion`` values this server supports ("": a client that sets none)."""
UNSUPPORTED = {"error": "VersionNotSupported", "versionType": "schema"}


class Store:
    """Entries ``key -> value`` and clients, each stamped with the global version."""

    def __init__(self) -> None:
        self.version = 0
        self.entries: dict[str, dict[str, Any]] = {}  # key -> {value, version, deleted}
        self.clients: dict[str, dict[str, Any]] = {}  # id -> {group, last_mutation_id, version}

    def last_mutation_id(self, group: Any, client_id: str) -> int | None:
        """The last mutation processed for a client (syncperf's callback)."""
        client = self.clients.get(client_id)
        return None if client is None else int(client["last_mutation_id"])

    def push(self, body: dict[str, Any]) -> None:
        """Run the push's new mutations in order, each one exactly once."""
        self.version += 1
        for mutation in body["mutations"]:
            client = self.clients.setdefault(
                mutation["clientID"],
                {"group": body["clientGroupID"], "last_mutation_id": 0, "version": 0},
            )
            expected = client["last_mutation_id"] + 1
            if mutation["id"] < expected:
                continue  # already processed: a retried push
            if mutation["id"] > expected:
                break  # from the future: the client will resend the gap
            mutator = MUTATORS.get(mutation["name"])
            if mutator is not None:
                mutator(self, mutation["args"])
            client.update(last_mutation_id=mutation["id"], version=self.version)

    def pull(self, body: dict[str, Any]) -> dict[str, Any]:
        """Everything changed since the cookie (a version), as a Replicache patch."""
        first = body.get("cookie") is None
        cookie = -1 if first else int(body["cookie"])
        patch: list[dict[str, Any]] = [{"op": "clear"}] if first else []
        for key, entry in sorted(self.entries.items()):
            if entry["version"] <= cookie:
                continue
            if entry["deleted"]:
                if not first:
                    patch.append({"op": "del", "key": key})
            else:
                patch.append({"op": "put", "key": key, "value": entry["value"]})
        changes = {
            client_id: client["last_mutation_id"]
            for client_id, client in self.clients.items()
            if client["group"] == body["clientGroupID"] and client["version"] > cookie
        }
        return {"cookie": self.version, "lastMutationIDChanges": changes, "patch": patch}

    def put(self, key: str, value: Any) -> None:
        """Write an entry at the current version."""
        self.entries[key] = {"value": value, "version": self.version, "deleted": False}

    def get(self, key: str) -> Any:
        """An entry's value, or None when absent or deleted."""
        entry = self.entries.get(key)
        return None if entry is None or entry["deleted"] else entry["value"]

    def delete(self, key: str) -> None:
        """Delete an entry at the current version."""
        if key in self.entries:
            self.entries[key].update(deleted=True, version=self.version)


def create_todo(store: Store, args: dict[str, Any]) -> None:
    """Mutator ``createTodo({id, text})``."""
    store.put(f"todo/{args['id']}", {"id": args["id"], "text": args["text"], "done": False})


def update_todo(store: Store, args: dict[str, Any]) -> None:
    """Mutator ``updateTodo({id, ...fields})``; a deleted todo stays deleted (a conflict)."""
    todo = store.get(f"todo/{args['id']}")
    if todo is None:  # deleted by another client meanwhile: the server wins
        syncperf.current_operation().record_conflict(entity="todo", resolution="server_wins")
        return
    store.put(f"todo/{args['id']}", {**todo, **{k: v for k, v in args.items() if k != "id"}})


def delete_todo(store: Store, args: dict[str, Any]) -> None:
    """Mutator ``deleteTodo({id})``."""
    store.delete(f"todo/{args['id']}")


MUTATORS = {"createTodo": create_todo, "updateTodo": update_todo, "deleteTodo": delete_todo}


def create_app(store: Store | None = None, *, measured_by: str = "decorator") -> FastAPI:
    """A FastAPI app serving ``POST /replicache/push`` and ``POST /replicache/pull``.

    Args:
        store: The state (a new one by default).
        measured_by: ``"decorator"`` (``instrument_sync`` on each handler) or
            ``"middleware"`` (``SyncPerfMiddleware`` routes with the same adapters).
    """
    if measured_by not in ("decorator", "middleware"):
        raise ValueError(f"measured_by must be 'decorator' or 'middleware', not {measured_by!r}")
    store = store or Store()
    app = FastAPI(title="Replicache backend (syncperf example)")
    app.state.store = store

    push_adapter = replicache.Push(
        last_mutation_id=store.last_mutation_id, entity=MUTATOR_ENTITY, change=MUTATOR_CHANGE
    )
    pull_adapter = replicache.Pull()

    async def push(body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        if body.get("schemaVersion", "") not in SCHEMA_VERSIONS:
            return UNSUPPORTED  # the client asks its app to update; nothing is applied
        store.push(body)
        return {}

    async def pull(body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        if body.get("schemaVersion", "") not in SCHEMA_VERSIONS:
            return UNSUPPORTED
        return store.pull(body)

    if measured_by == "decorator":
        push = syncperf.instrument_sync("push", adapter=push_adapter)(push)
        pull = syncperf.instrument_sync("pull", adapter=pull_adapter)(pull)
    else:
        app.add_middleware(
            SyncPerfMiddleware,
            routes={
                "/replicache/push": SyncRoute("push", adapter=push_adapter),
                "/replicache/pull": SyncRoute("pull", adapter=pull_adapter),
            },
        )
    app.post("/replicache/push")(push)
    app.post("/replicache/pull")(pull)
    return app


app = create_app()

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app)

"""A Zero push endpoint (custom mutators) measured by syncperf.

Zero's cache server forwards each client's mutations to your push endpoint:
``{clientGroupID, mutations: [{type, id, clientID, name, args, timestamp}], pushVersion,
requestID}``, answered per mutation with ``{id: {id, clientID}, result: {}}`` or an error
result. ``syncperf.adapters.zero.Push`` reads both: mutations by entity (the mutator's
namespace, ``issue.create`` -> ``issue``) and change type, a resent mutation (at or below
the client's last mutation ID, read before the handler) as a duplicate, and mutations the
server refused (``error: "app"``) as conflicts.

Refused here: ``issue.update`` of an issue another client deleted (the server wins).

``create_app(measured_by=...)`` measures the handler with the decorator or with the ASGI
middleware. Run it::

    pip install "syncperf[demo]"
    uvicorn examples.zero_server:app

State lives in memory (one store per ``create_app()``).
"""

from typing import Annotated, Any

from fastapi import Body, FastAPI

import syncperf
from syncperf.adapters import zero
from syncperf.asgi import SyncPerfMiddleware, SyncRoute

__all__ = ["Store", "app", "create_app"]

CHANGES = {"issue.create": "created", "issue.update": "updated", "issue.delete": "deleted"}


class Store:
    """Issues, and the last mutation processed per client."""

    def __init__(self) -> None:
        self.issues: dict[str, dict[str, Any]] = {}
        self.last: dict[str, int] = {}

    def last_mutation_id(self, group: Any, client_id: str) -> int | None:
        """The last mutation processed for a client (syncperf's callback)."""
        return self.last.get(client_id)

    def push(self, body: dict[str, Any]) -> dict[str, Any]:
        """Run each new mutation once, in order; answer one result per mutation."""
        results = []
        for mutation in body["mutations"]:
            client, mutation_id = mutation["clientID"], mutation["id"]
            key = {"id": mutation_id, "clientID": client}
            if mutation_id <= self.last.get(client, 0):
                results.append({"id": key, "result": {"error": "alreadyProcessed"}})
                continue
            self.last[client] = mutation_id
            results.append({"id": key, "result": self._run(mutation["name"], mutation["args"])})
        return {"mutations": results}

    def _run(self, name: str, args: list[dict[str, Any]]) -> dict[str, Any]:
        issue = args[0]
        if name == "issue.create":
            self.issues[issue["id"]] = dict(issue)
        elif name == "issue.update":
            if issue["id"] not in self.issues:  # deleted by another client: the server wins
                return {"error": "app", "details": "the issue was deleted"}
            self.issues[issue["id"]].update(issue)
        elif name == "issue.delete":
            self.issues.pop(issue["id"], None)
        return {}


def create_app(store: Store | None = None, *, measured_by: str = "decorator") -> FastAPI:
    """A FastAPI app serving ``POST /api/zero/push``.

    Args:
        store: The state (a new one by default).
        measured_by: ``"decorator"`` or ``"middleware"``.
    """
    if measured_by not in ("decorator", "middleware"):
        raise ValueError(f"measured_by must be 'decorator' or 'middleware', not {measured_by!r}")
    store = store or Store()
    app = FastAPI(title="Zero push endpoint (syncperf example)")
    app.state.store = store
    adapter = zero.Push(last_mutation_id=store.last_mutation_id, change=CHANGES)

    async def push(body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        return store.push(body)

    if measured_by == "decorator":
        push = syncperf.instrument_sync("push", adapter=adapter)(push)
    else:
        app.add_middleware(
            SyncPerfMiddleware, routes={"/api/zero/push": SyncRoute("push", adapter=adapter)}
        )
    app.post("/api/zero/push")(push)
    return app


app = create_app()

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app)

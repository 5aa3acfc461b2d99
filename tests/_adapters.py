"""What the adapter test modules share: feeding an exchange, reading a capture, and the
documented payloads more than one module uses (each test module imports this, none imports
another: each runs alone)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import syncperf
from syncperf.adapters import couchdb, powersync, watermelondb
from syncperf.testing import Capture

TWO_TASKS = {"tasks": {"created": [{"id": "a"}, {"id": "b"}], "updated": [], "deleted": []}}
PUSHES: dict[str, tuple[Any, Any]] = {
    "watermelondb.Push": (watermelondb.Push, {"changes": TWO_TASKS}),
    "powersync.Upload": (
        powersync.Upload,
        {"batch": [{"op": "PUT", "table": "tasks", "id": i} for i in "ab"]},
    ),
    "couchdb.BulkDocs": (
        couchdb.BulkDocs,
        {"docs": [{"_id": f"tasks:{i}", "_rev": "1-x"} for i in "ab"], "new_edits": False},
    ),
}
"""Push adapters and a body each that carries two ``tasks`` rows."""

# --- helpers ------------------------------------------------------------------------------


def run(
    adapter: Any,
    request: Any = None,
    response: Any = None,
    *,
    operation: str = "push",
    entity: str | None = None,
    skip_request: bool = False,
) -> None:
    """Feed one exchange to ``adapter`` the way the decorator and the middleware do."""
    with syncperf.sync_operation(operation, entity=entity) as op:
        if not skip_request:
            adapter.on_request(op, request)
        adapter.on_response(op, response)


@dataclass
class Recorded:
    """What one capture holds, keyed the way tests compute expectations."""

    items: dict[tuple[str | None, str | None], int] = field(default_factory=dict)
    conflicts: dict[tuple[str | None, str | None], int] = field(default_factory=dict)
    batches: list[tuple[int, float]] = field(default_factory=list)  # (count, sum)
    idempotency: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)

    @property
    def batch_sum(self) -> float:
        return sum(total for _, total in self.batches)

    @property
    def batch_count(self) -> int:
        return sum(n for n, _ in self.batches)


def recorded(cap: Capture) -> Recorded:
    """Read items, conflicts, batch sizes, idempotency hits and drops from ``cap``."""
    out = Recorded()
    for metric in cap.metrics():
        for point in metric.data.data_points:
            attrs = dict(point.attributes or {})
            if metric.name == "sync.items" and point.value:
                key = (attrs.get("sync.entity"), attrs.get("sync.change"))
                out.items[key] = out.items.get(key, 0) + point.value
            elif metric.name == "sync.conflicts" and point.value:
                key = (attrs.get("sync.entity"), attrs.get("sync.conflict.resolution"))
                out.conflicts[key] = out.conflicts.get(key, 0) + point.value
            elif metric.name == "sync.batch.size":
                out.batches.append((point.count, point.sum))
            elif metric.name == "sync.idempotency.hits":
                out.idempotency += point.value
            elif metric.name == "syncperf.dropped" and point.value:
                reason = attrs["syncperf.reason"]
                out.dropped[reason] = out.dropped.get(reason, 0) + point.value
            elif metric.name == "sync.operation.duration":
                outcome = attrs["sync.outcome"]
                out.outcomes[outcome] = out.outcomes.get(outcome, 0) + point.count
    return out


def span_attributes(cap: Capture) -> dict[str, Any]:
    """Attributes of the only span captured."""
    (span,) = cap.spans()
    return dict(span.attributes or {})


# --- documented payloads ------------------------------------------------------------

PUSH_V1 = {
    "pushVersion": 1,
    "clientGroupID": "cg1",
    "profileID": "p1",
    "schemaVersion": "",
    "mutations": [
        {"id": 7, "clientID": "c1", "name": "createTodo", "args": {"id": "t1"}, "timestamp": 1.0},
        {"id": 8, "clientID": "c1", "name": "updateTodo", "args": {"id": "t1"}, "timestamp": 2.0},
        {"id": 3, "clientID": "c2", "name": "deleteTodo", "args": {"id": "t9"}, "timestamp": 3.0},
    ],
}

PULL_V1_RESPONSE = {
    "cookie": 42,
    "lastMutationIDChanges": {"c1": 8},
    "patch": [
        {"op": "clear"},
        {"op": "put", "key": "todo/t1", "value": {"title": "a"}},
        {"op": "put", "key": "todo/t2", "value": {"title": "b"}},
        {"op": "del", "key": "list/l1"},
        {"op": "put", "key": "settings", "value": {}},
    ],
}

# the example from the WatermelonDB "Implementing your Sync backend" page
CHANGES = {
    "projects": {
        "created": [
            {"id": "aaaa", "name": "Foo", "is_favorite": True},
            {"id": "bbbb", "name": "Bar", "is_favorite": False},
        ],
        "updated": [{"id": "ccc", "name": "Baz", "is_favorite": True}],
        "deleted": ["ddd"],
    },
    "tasks": {"created": [], "updated": [{"id": "tttt", "name": "Buy eggs"}], "deleted": []},
}

BULK = {
    "docs": [
        {"_id": "todo:1", "type": "todo", "title": "new"},
        {"_id": "todo:2", "_rev": "1-abc", "type": "todo", "title": "edited"},
        {"_id": "list:1", "_rev": "3-def", "type": "list", "_deleted": True},
        {"_id": "note:1", "_rev": "2-fff", "type": "note"},
    ]
}

BULK_RESPONSE = [
    {"ok": True, "id": "todo:1", "rev": "1-111"},
    {"id": "todo:2", "error": "conflict", "reason": "Document update conflict."},
    {"ok": True, "id": "list:1", "rev": "4-444"},
    {"id": "note:1", "error": "forbidden", "reason": "Only admins"},
]

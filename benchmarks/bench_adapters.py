"""Cost of ``syncperf.adapters`` per operation vs the JSON parsing the handler already does.

For each protocol, a realistic exchange (tens of records with a handful of fields each) is
serialised once. Reference: ``json.loads`` of the request and of the response body, which
the framework or the handler does anyway. Ours: the adapter's ``on_request`` and
``on_response`` on the parsed payloads, recorded into a live sync operation (tallying,
callbacks, recording). Variants run round-robin in one process. Run::

    pytest benchmarks/bench_adapters.py -p no:cacheprovider -o python_files='bench_*.py' -s
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import syncperf
from benchmarks._compare import interleaved, table
from syncperf.adapters import couchdb, powersync, replicache, rxdb, watermelondb, zero


def _record(i: int) -> dict[str, Any]:
    return {
        "id": f"rec-{i:05d}",
        "title": f"Task number {i}",
        "done": i % 3 == 0,
        "project_id": f"p-{i % 7}",
        "position": i * 10,
        "updated_at": 1700000000000 + i,
    }


def _cases() -> dict[str, tuple[Any, Any, Any, str]]:
    """name -> (adapter, request, response, operation)."""
    tables = ("tasks", "projects", "comments")
    wm_changes = {
        t: {
            "created": [_record(i) for i in range(10)],
            "updated": [_record(i) for i in range(6)],
            "deleted": [f"gone-{i}" for i in range(2)],
        }
        for t in tables
    }
    mutations = [
        {
            "id": i,
            "clientID": "client-1",
            "name": ("createTodo", "updateTodo")[i % 2],
            "args": _record(i),
            "timestamp": 1700000000.0 + i,
        }
        for i in range(1, 51)
    ]
    zero_mutations = [
        {
            "type": "crud",
            "id": i,
            "clientID": "client-1",
            "name": "_zero_crud",
            "timestamp": 1.0 + i,
            "args": [
                {
                    "ops": [
                        {
                            "op": "insert",
                            "tableName": "issue",
                            "primaryKey": ["id"],
                            "value": _record(i),
                        },
                        {
                            "op": "update",
                            "tableName": "comment",
                            "primaryKey": ["id"],
                            "value": _record(i),
                        },
                    ]
                }
            ],
        }
        for i in range(1, 26)
    ]
    zero_results = {
        "mutations": [
            {
                "id": {"id": i, "clientID": "client-1"},
                "result": {"error": "app", "message": "no"} if i % 10 == 0 else {},
            }
            for i in range(1, 26)
        ]
    }
    rx_rows = [
        {
            "assumedMasterState": None if i % 4 == 0 else {**_record(i), "_deleted": False},
            "newDocumentState": {**_record(i), "title": "changed", "_deleted": i % 9 == 0},
        }
        for i in range(50)
    ]
    rx_conflicts = [{**_record(i), "title": "theirs", "_deleted": False} for i in (3, 17)]
    docs = [
        {"_id": f"todo:{i}", "type": "todo", **_record(i), **({"_rev": "2-ab"} if i % 2 else {})}
        for i in range(50)
    ]
    bulk_results = [
        {"id": d["_id"], "error": "conflict", "reason": "Document update conflict."}
        if i % 10 == 0
        else {"ok": True, "id": d["_id"], "rev": "3-cd"}
        for i, d in enumerate(docs)
    ]
    crud = [
        {
            "op_id": i,
            "op": ("PUT", "PATCH", "DELETE")[i % 3],
            "type": tables[i % 3],
            "id": f"rec-{i}",
            "tx_id": 40 + i // 10,
            "data": _record(i),
        }
        for i in range(50)
    ]
    patch = [{"op": "put", "key": f"todo/{i}", "value": _record(i)} for i in range(100)]
    return {
        "WatermelonDB push (48 records, 3 tables)": (
            watermelondb.Push(count_existing=lambda table, records: 0),
            wm_changes,
            {"experimentalRejectedIds": {"tasks": ["rec-00001"]}},
            "push",
        ),
        "WatermelonDB pull (48 records, 3 tables)": (
            watermelondb.Pull(),
            None,
            {"changes": wm_changes, "timestamp": 1},
            "pull",
        ),
        "Replicache push v1 (50 mutations)": (
            replicache.Push(
                last_mutation_id=lambda group, client: 10,
                entity={"createTodo": "todo", "updateTodo": "todo"},
                change={"createTodo": "created", "updateTodo": "updated"},
            ),
            {"pushVersion": 1, "clientGroupID": "g", "mutations": mutations},
            {},
            "push",
        ),
        "Replicache pull (100 patch ops)": (
            replicache.Pull(),
            {"pullVersion": 1, "clientGroupID": "g", "cookie": 4},
            {"cookie": 5, "lastMutationIDChanges": {"client-1": 50}, "patch": patch},
            "pull",
        ),
        "Zero push (25 CRUD mutations, 50 ops)": (
            zero.Push(),
            {
                "clientGroupID": "g",
                "mutations": zero_mutations,
                "pushVersion": 1,
                "timestamp": 1.0,
                "requestID": "r",
            },
            zero_results,
            "push",
        ),
        "RxDB push (50 rows, 2 conflicts)": (rxdb.Push(), rx_rows, rx_conflicts, "push"),
        "CouchDB _bulk_docs (50 docs)": (couchdb.BulkDocs(), {"docs": docs}, bulk_results, "push"),
        "PowerSync upload (50 entries)": (
            powersync.Upload(last_tx_id=lambda body: 41),
            {"batch": crud},
            {"ok": True},
            "push",
        ),
    }


def _variants(
    adapter: Any, request: Any, response: Any, op: syncperf.SyncOperation
) -> tuple[Callable[[], object], Callable[[], object]]:
    raw_request = json.dumps(request).encode()
    raw_response = json.dumps(response).encode()
    loads = json.loads
    on_request, on_response = adapter.on_request, adapter.on_response

    def parse() -> object:
        return loads(raw_request), loads(raw_response)

    def adapt() -> object:
        on_request(op, request)
        on_response(op, response)
        return None

    return parse, adapt


def test_adapter_cost_vs_json_parsing(benchmark: Any) -> None:
    rows = []
    syncperf.configure(strict=True)  # any drop would raise: the payloads are valid
    try:
        for case, (adapter, request, response, operation) in _cases().items():
            with syncperf.sync_operation(operation) as op:
                parse, adapt = _variants(adapter, request, response, op)
                r = interleaved({"json": parse, "adapter": adapt}, loops=200, rounds=11, warmup=50)
            rows.append((case, r["adapter"], r["json"], r["adapter"] / r["json"]))
        case, (adapter, request, response, operation) = next(iter(_cases().items()))
        with syncperf.sync_operation(operation) as op:
            benchmark.pedantic(adapter.on_request, args=(op, request), rounds=200, iterations=1)
    finally:
        syncperf.configure()
    print()
    print(table(rows, "Adapters: µs per exchange, adapter vs json.loads of the same bodies"))
    benchmark.extra_info.update({case: round(ratio, 3) for case, _, _, ratio in rows})
    # loose, noise-proof bound: every adapter costs well under the parse it rides on
    # (measured 0.26-0.51 on the 2-core VM, docs/adapters.md)
    assert all(ratio < 0.6 for *_, ratio in rows), rows

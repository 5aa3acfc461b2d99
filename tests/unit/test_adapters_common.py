"""Behaviour shared by every protocol adapter (the helpers the per-protocol tests share are
in tests/_adapters.py)."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field, RootModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import syncperf
from syncperf.adapters import couchdb, powersync, replicache, rxdb, watermelondb, zero
from syncperf.asgi import SyncPerfMiddleware, SyncRoute
from syncperf.exceptions import ConfigError, MeasurementError
from syncperf.testing import Capture, capture
from tests._adapters import (
    BULK,
    BULK_RESPONSE,
    CHANGES,
    PULL_V1_RESPONSE,
    PUSH_V1,
    recorded,
    run,
)

# --- every adapter, fed the wrong thing --------------------------------------------------

ADAPTERS: dict[str, Callable[[], Any]] = {
    "replicache.Push": lambda: replicache.Push(last_mutation_id=lambda group, client: 3),
    "replicache.Pull": replicache.Pull,
    "zero.Push": lambda: zero.Push(last_mutation_id=lambda group, client: 3),
    "watermelondb.Pull": watermelondb.Pull,
    "watermelondb.Push": lambda: watermelondb.Push(count_existing=lambda table, ids: 0),
    "rxdb.Pull": rxdb.Pull,
    "rxdb.Push": rxdb.Push,
    "couchdb.BulkDocs": couchdb.BulkDocs,
    "couchdb.Changes": couchdb.Changes,
    "couchdb.RevsDiff": couchdb.RevsDiff,
    "powersync.Upload": lambda: powersync.Upload(last_tx_id=lambda body: 3),
}

PROTOCOL_KEYS = [
    "mutations",
    "name",
    "id",
    "clientID",
    "clientGroupID",
    "pushVersion",
    "patch",
    "op",
    "key",
    "changes",
    "created",
    "updated",
    "deleted",
    "experimentalRejectedIds",
    "syncJson",
    "documents",
    "rows",
    "newDocumentState",
    "assumedMasterState",
    "_deleted",
    "conflicts",
    "docs",
    "new_edits",
    "_id",
    "_rev",
    "type",
    "results",
    "rev",
    "missing",
    "pending",
    "batch",
    "crud",
    "table",
    "tx_id",
    "transactionId",
    "result",
    "error",
    "args",
    "ops",
    "tableName",
    "entityType",
]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-5, max_value=10)
    | st.floats(allow_nan=True)
    | st.sampled_from(
        [
            "put",
            "del",
            "clear",
            "PUT",
            "PATCH",
            "DELETE",
            "app",
            "conflict",
            "_zero_crud",
            "insert",
            "upsert",
            "1-a",
            "2-b",
            "",
            "x",
            "todo/1",
        ]
    )
    | st.text(max_size=4)
)
garbage = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(PROTOCOL_KEYS) | st.text(max_size=3), children, max_size=5
        )
    ),
    max_leaves=25,
)


def test_fuzzed_garbage_never_raises_in_lenient_mode() -> None:
    with capture(strict=False) as cap:

        @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(adapter_name=st.sampled_from(sorted(ADAPTERS)), request=garbage, response=garbage)
        def exchange(adapter_name: str, request: Any, response: Any) -> None:
            run(ADAPTERS[adapter_name](), request, response)

        exchange()
        got = recorded(cap)
        errors = {
            (point.attributes or {}).get("error.type")
            for point in cap.points("sync.operation.duration")
            if (point.attributes or {}).get("sync.outcome") == "error"
        }
    # an entity name the client sent that is no name (a control character) is dropped too,
    # as the strict-mode test below sees it raise
    assert "unparseable_payload" in got.dropped
    assert set(got.dropped) <= {"unparseable_payload", "invalid_entity"}
    # only a push or pull refused in its answer ({error: ...}) is an error, by a known token
    assert errors <= replicache.ERRORS | zero.ERRORS | {"_OTHER"}


def test_fuzzed_garbage_raises_only_measurement_errors_in_strict_mode() -> None:
    with capture():

        @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(adapter_name=st.sampled_from(sorted(ADAPTERS)), request=garbage, response=garbage)
        def exchange(adapter_name: str, request: Any, response: Any) -> None:
            try:
                run(ADAPTERS[adapter_name](), request, response)
            except MeasurementError as error:  # a name the client sent that is no entity
                assert error.reason in ("unparseable_payload", "invalid_entity")  # name: dropped

        exchange()


@pytest.mark.parametrize("adapter_name", sorted(ADAPTERS))
def test_a_malformed_payload_is_counted_and_the_operation_still_timed(adapter_name: str) -> None:
    adapter = ADAPTERS[adapter_name]()
    with capture(strict=False) as cap:
        run(adapter, 42, 42)
        got = recorded(cap)
    assert got.dropped["unparseable_payload"] >= 1
    assert got.outcomes == {"success": 1}
    assert got.items == {}


@pytest.mark.parametrize("adapter_name", sorted(ADAPTERS))
def test_a_malformed_payload_raises_measurement_error_in_strict_mode(adapter_name: str) -> None:
    adapter = ADAPTERS[adapter_name]()
    with capture(), pytest.raises(MeasurementError, match="unparseable_payload"):
        run(adapter, 42, 42)


def test_a_half_malformed_payload_records_nothing_rather_than_half_of_it() -> None:
    body = {"mutations": [{"id": 1, "name": "createTodo"}, {"id": 2, "name": 7}]}
    with capture(strict=False) as cap:
        run(replicache.Push(), body)
        got = recorded(cap)
    assert got.items == {}
    assert got.batch_count == 0
    assert got.dropped == {"unparseable_payload": 1}


def test_the_decorated_handler_runs_and_returns_even_when_the_payload_is_garbage() -> None:
    @syncperf.instrument_sync("push", adapter=watermelondb.Push())
    def push(body: Any) -> str:
        return "handled"

    with capture(strict=False) as cap:
        assert push(["not", "changes"]) == "handled"
        got = recorded(cap)
    assert got.dropped == {"unparseable_payload": 2}
    assert got.outcomes == {"success": 1}


def test_a_failing_callback_is_counted_not_raised_in_lenient_mode() -> None:
    def broken(group: Any, client: str) -> int:
        raise RuntimeError("database down")

    body = {"clientGroupID": "g", "mutations": [{"id": 1, "clientID": "c", "name": "m"}]}
    with capture(strict=False) as cap:
        run(replicache.Push(last_mutation_id=broken), body)
        got = recorded(cap)
    assert got.dropped == {"adapter_callback_failed": 1}
    assert got.items == {}


def test_a_failing_callback_raises_its_own_exception_in_strict_mode() -> None:
    error = RuntimeError("database down")

    def broken(table: str, ids: Any) -> int:
        raise error

    with capture(), pytest.raises(RuntimeError) as raised:
        run(watermelondb.Push(count_existing=broken), {"t": {"created": [{"id": "a"}]}})
    assert raised.value is error


def test_a_callback_returning_the_wrong_type_is_a_callback_failure() -> None:
    with capture(strict=False) as cap:
        run(powersync.Upload(last_tx_id=lambda body: "7"), {"batch": []})
        got = recorded(cap)
    assert got.dropped == {"adapter_callback_failed": 1}


def test_adapters_do_nothing_on_the_noop_operation() -> None:
    op = syncperf.current_operation()
    for make in ADAPTERS.values():
        adapter = make()
        adapter.on_request(op, 42)
        adapter.on_response(op, 42)


def test_adapters_plug_into_instrument_sync_with_an_explicit_request_parameter() -> None:
    @syncperf.instrument_sync("push", adapter=powersync.Upload(), request="payload")
    def upload(user: str, payload: dict[str, Any]) -> dict[str, Any]:
        return {}

    with capture() as cap:
        upload("u1", {"batch": [{"op": "PUT", "table": "todo", "id": "1", "data": {}}]})
        got = recorded(cap)
    assert got.items == {("todo", "created"): 1}


@pytest.mark.parametrize(
    ("make", "option"),
    [
        (lambda: replicache.Push(last_mutation_id=3), "last_mutation_id"),  # type: ignore[arg-type]
        (lambda: replicache.Push(entity=5), "entity"),  # type: ignore[arg-type]
        (lambda: replicache.Push(change={"m": "renamed"}), "change"),
        (lambda: replicache.Pull(entity="todo"), "entity"),  # type: ignore[arg-type]
        (lambda: replicache.key_prefix(""), "separator"),
        (lambda: zero.Push(entity={"m": ""}), "entity"),
        (lambda: watermelondb.Push(count_existing=[]), "count_existing"),  # type: ignore[arg-type]
        (lambda: rxdb.Push(primary_key=""), "primary_key"),
        (lambda: couchdb.BulkDocs(type_field=""), "type_field"),
        (lambda: couchdb.Changes(entity="type"), "entity"),  # type: ignore[arg-type]
        (lambda: powersync.Upload(conflicts=1), "conflicts"),  # type: ignore[arg-type]
    ],
)
def test_configuration_mistakes_raise_config_error_naming_the_option(
    make: Callable[[], Any], option: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        make()
    assert raised.value.option == option


OPTIONS: list[tuple[Callable[..., Any], str]] = [
    (replicache.Push, "last_mutation_id"),
    (replicache.Push, "entity"),
    (replicache.Push, "change"),
    (replicache.Pull, "entity"),
    (replicache.Pull, "cookie_time"),
    (zero.Push, "last_mutation_id"),
    (zero.Push, "entity"),
    (zero.Push, "change"),
    (watermelondb.Push, "count_existing"),
    (rxdb.Pull, "checkpoint_ms"),
    (rxdb.Push, "primary_key"),
    (rxdb.Push, "server_fields"),
    (couchdb.BulkDocs, "entity"),
    (couchdb.BulkDocs, "type_field"),
    (couchdb.BulkDocs, "id_separator"),
    (couchdb.BulkDocs, "open_conflicts"),
    (couchdb.BulkGet, "entity"),
    (couchdb.Changes, "since_time"),
    (powersync.Upload, "last_tx_id"),
    (powersync.Upload, "conflicts"),
]
WRONG_SHAPES = st.one_of(
    st.integers(),
    st.floats(allow_nan=False),
    st.booleans(),
    st.binary(max_size=8),
    st.text(max_size=8),
    st.lists(st.one_of(st.integers(), st.none(), st.text(max_size=3)), max_size=3),
    st.dictionaries(st.one_of(st.text(max_size=3), st.integers()), st.integers(), max_size=2),
    st.sets(st.integers(), max_size=3),
    st.just(object()),
    st.just(ConfigError),
)


@settings(max_examples=300, deadline=None)
@given(option=st.sampled_from(OPTIONS), value=WRONG_SHAPES)
def test_an_adapter_option_of_any_shape_is_accepted_or_a_config_error_naming_it(
    option: tuple[Callable[..., Any], str], value: Any
) -> None:
    make, name = option
    try:
        make(**{name: value})
    except ConfigError as error:
        assert error.option == name


def test_server_fields_that_are_not_iterable_are_a_config_error() -> None:
    with pytest.raises(ConfigError) as raised:
        rxdb.Push(server_fields=5)  # type: ignore[arg-type]
    assert raised.value.option == "server_fields"


def test_server_fields_given_as_a_generator_are_all_kept() -> None:
    adapter = rxdb.Push(server_fields=(name for name in ["updatedAt"]))
    assert "updatedAt" in adapter._ignored


@pytest.mark.parametrize("make", [lambda a: SyncRoute("push", adapter=a), syncperf.instrument_sync])
@pytest.mark.parametrize("cls", [watermelondb.Push, zero.Push, couchdb.RevsDiff])
def test_an_adapter_class_instead_of_an_instance_is_a_config_error(
    make: Callable[[Any], Any], cls: type
) -> None:
    with pytest.raises(ConfigError) as raised:
        make(cls) if make is not syncperf.instrument_sync else make("push", adapter=cls)
    assert raised.value.option.endswith("adapter")
    assert cls.__name__ in str(raised.value)
    assert "instance" in str(raised.value) and f"{cls.__name__}()" in str(raised.value)


# --- payload forms: dicts, pydantic models, plain objects ---------------------------------


class Mutation(BaseModel):
    id: int
    client_id: str = Field(alias="clientID")
    name: str
    args: Any = None


class PushRequest(BaseModel):
    push_version: int = Field(alias="pushVersion")
    client_group_id: str = Field(alias="clientGroupID")
    mutations: list[Mutation]


class TableChanges(BaseModel):
    created: list[dict[str, Any]] = []
    updated: list[dict[str, Any]] = []
    deleted: list[str] = []


class Changes(RootModel[dict[str, TableChanges]]):
    pass


class PullResponse(BaseModel):
    changes: dict[str, TableChanges]
    timestamp: int


class FixedTables(BaseModel):
    model_config = ConfigDict(extra="allow")
    todos: TableChanges | None = None
    projects: TableChanges | None = None


def test_pydantic_models_are_read_by_alias_without_serialising_them() -> None:
    body = PushRequest.model_validate(
        {
            "pushVersion": 1,
            "clientGroupID": "g",
            "mutations": [
                {"id": 1, "clientID": "c", "name": "createTodo"},
                {"id": 2, "clientID": "c", "name": "createTodo"},
            ],
        }
    )
    with capture() as cap:
        run(replicache.Push(last_mutation_id=lambda group, client: 1), body)
        got = recorded(cap)
        (span,) = cap.spans()
    assert got.items == {("createTodo", None): 1}
    assert (span.attributes or {})["sync.replicache.duplicate_mutations"] == 1


def test_root_models_and_nested_models_are_read_like_dicts() -> None:
    changes = Changes.model_validate(
        {"todos": {"created": [{"id": "a"}], "deleted": ["b", "c"]}, "projects": {}}
    )
    response = PullResponse.model_validate({"changes": changes.root, "timestamp": 5})
    with capture() as cap:
        run(watermelondb.Push(), changes)
        run(watermelondb.Pull(), None, response, operation="pull")
        got = recorded(cap)
    assert got.items == {("todos", "created"): 2, ("todos", "deleted"): 4}


def test_a_model_with_one_field_per_table_counts_the_tables_that_were_set() -> None:
    body = FixedTables.model_validate(
        {"todos": {"updated": [{"id": "a"}]}, "tags": {"created": [{"id": "t"}]}}
    )
    with capture() as cap:
        run(watermelondb.Push(), body)
        got = recorded(cap)
    assert got.items == {("todos", "updated"): 1, ("tags", "created"): 1}


def test_plain_objects_are_read_by_attribute_in_camel_or_snake_case() -> None:
    body = SimpleNamespace(
        client_group_id="g",
        mutations=[SimpleNamespace(id=5, clientID="c", name="m", args=None)],
    )
    seen: list[Any] = []
    with capture() as cap:
        run(replicache.Push(last_mutation_id=lambda g, c: seen.append((g, c)) or 4), body)
        got = recorded(cap)
    assert seen == [("g", "c")]
    assert got.items == {("m", None): 1}


# --- through the ASGI middleware's route configuration ------------------------------------


async def test_adapters_plug_into_the_asgi_middleware_routes(syncperf_capture: Capture) -> None:
    async def push(request: Request) -> JSONResponse:
        await request.json()
        return JSONResponse({"experimentalRejectedIds": {"tasks": ["t2"]}})

    async def pull(request: Request) -> JSONResponse:
        return JSONResponse({"changes": {"tasks": {"updated": [{"id": "t1"}]}}, "timestamp": 9})

    app = Starlette(routes=[Route("/sync", push, methods=["POST"]), Route("/sync", pull)])
    wrapped = SyncPerfMiddleware(
        app,
        routes={"/sync": SyncRoute("push", adapter=watermelondb.Push())},
    )
    pulled = SyncPerfMiddleware(
        app, routes={"/sync": SyncRoute("pull", adapter=watermelondb.Pull())}
    )
    body = {"tasks": {"created": [{"id": "t1"}], "updated": [{"id": "t2"}], "deleted": []}}
    transport = httpx.ASGITransport(app=wrapped)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.post("/sync", json=body)).status_code == 200
    transport = httpx.ASGITransport(app=pulled)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/sync")).status_code == 200
    got = recorded(syncperf_capture)
    assert got.items == {("tasks", "created"): 1, ("tasks", "updated"): 2}
    assert got.conflicts == {("tasks", "rejected"): 1}
    assert got.outcomes == {"conflict": 1, "success": 1}


# --- models record exactly what dicts record ----------------------------------------------


class Obj(BaseModel):
    """A pydantic model holding any JSON object as extra fields."""

    model_config = ConfigDict(extra="allow")


def as_models(value: Any) -> Any:
    """The same payload with every JSON object turned into a pydantic model."""
    if isinstance(value, dict):
        return Obj(**{key: as_models(item) for key, item in value.items()})
    if isinstance(value, list):
        return [as_models(item) for item in value]
    return value


def _documented_exchanges() -> list[tuple[str, Callable[[], Any], Any, Any, str]]:
    zero_body = {
        "clientGroupID": "g",
        "mutations": [
            {
                "id": 1,
                "clientID": "c",
                "name": "_zero_crud",
                "args": [{"ops": [{"op": "insert", "tableName": "issue", "value": {}}]}],
            },
            {"id": 2, "clientID": "c", "name": "issue.close", "args": []},
        ],
    }
    zero_response = {
        "mutations": [
            {"id": {"id": 1, "clientID": "c"}, "result": {"error": "app"}},
            {"id": {"id": 2, "clientID": "c"}, "result": {}},
        ]
    }
    rows = [
        {"assumedMasterState": None, "newDocumentState": {"id": "a", "_deleted": False}},
        {"assumedMasterState": {"id": "b"}, "newDocumentState": {"id": "b", "v": 2}},
    ]
    upload = {
        "crud": [
            {"op": "PUT", "type": "todos", "id": "1", "tx_id": 4},
            {"op": "DELETE", "type": "todos", "id": "2", "tx_id": 5},
        ]
    }
    return [
        (
            "replicache push",
            lambda: replicache.Push(last_mutation_id=lambda g, c: 7),
            PUSH_V1,
            {},
            "push",
        ),
        ("replicache pull", replicache.Pull, None, PULL_V1_RESPONSE, "pull"),
        ("zero push", zero.Push, zero_body, zero_response, "push"),
        (
            "watermelondb push",
            watermelondb.Push,
            CHANGES,
            {"experimentalRejectedIds": {"tasks": ["tttt"]}},
            "push",
        ),
        ("watermelondb pull", watermelondb.Pull, None, {"changes": CHANGES}, "pull"),
        ("rxdb push", rxdb.Push, rows, [{"id": "b", "v": 3, "_deleted": False}], "push"),
        ("rxdb pull", rxdb.Pull, None, {"documents": [{"id": "a", "_deleted": True}]}, "pull"),
        ("couchdb bulk docs", couchdb.BulkDocs, BULK, BULK_RESPONSE, "push"),
        (
            "couchdb revs diff",
            couchdb.RevsDiff,
            {"a": ["1-x", "2-y"]},
            {"a": {"missing": ["2-y"]}},
            "push",
        ),
        (
            "powersync upload",
            lambda: powersync.Upload(last_tx_id=lambda body: 4),
            upload,
            {},
            "push",
        ),
    ]


@pytest.mark.parametrize(
    ("make", "request_body", "response_body", "operation"),
    [pytest.param(*case[1:], id=case[0]) for case in _documented_exchanges()],
)
def test_pydantic_payloads_record_exactly_what_dicts_record(
    make: Callable[[], Any], request_body: Any, response_body: Any, operation: str
) -> None:
    with capture() as cap:
        run(make(), request_body, response_body, operation=operation)
        from_dicts = recorded(cap)
    with capture() as cap:
        run(make(), as_models(request_body), as_models(response_body), operation=operation)
        from_models = recorded(cap)
    assert from_models == from_dicts
    assert from_dicts.items or from_dicts.idempotency or from_dicts.batch_sum  # something


@pytest.mark.parametrize(
    ("make", "request_body", "operation"),
    [
        *(pytest.param(case[1], case[2], case[4], id=case[0]) for case in _documented_exchanges()),
        pytest.param(couchdb.Changes, None, "pull", id="couchdb changes"),
        pytest.param(couchdb.BulkGet, None, "pull", id="couchdb bulk get"),
    ],
)
def test_every_adapter_takes_a_2xx_answer_without_a_body(
    make: Callable[[], Any], request_body: Any, operation: str
) -> None:
    # None: the handler returned nothing, or the middleware read no JSON body (a 204)
    with capture() as cap:  # strict: a drop would raise
        run(make(), request_body, None, operation=operation)
        got = recorded(cap)
    assert got.dropped == {}
    if operation == "push" and make is not couchdb.RevsDiff:  # what the request carried
        assert got.items


@pytest.mark.parametrize(
    "adapter",
    [
        lambda value: replicache.Push(last_mutation_id=lambda group, client: value),
        lambda value: watermelondb.Push(count_existing=lambda table, ids: value),
        lambda value: powersync.Upload(last_tx_id=lambda body: value),
        lambda value: powersync.Upload(conflicts=lambda body: value),
        lambda value: couchdb.BulkDocs(open_conflicts=lambda doc_id: value),
    ],
    ids=[
        "replicache last_mutation_id",
        "watermelondb count_existing",
        "powersync last_tx_id",
        "powersync conflicts",
        "couchdb open_conflicts",
    ],
)
def test_a_callback_result_of_the_wrong_type_is_described_never_rendered(adapter: Any) -> None:
    class Secret:
        def __repr__(self) -> str:
            raise AssertionError("repr of a callback's result: sk_live_secret")

        __str__ = __format__ = __repr__  # type: ignore[assignment]

    kind = type(adapter(None)).__module__
    body = {
        "syncperf.adapters.replicache": {
            "clientGroupID": "g",
            "mutations": [{"id": 1, "clientID": "c", "name": "m"}],
        },
        "syncperf.adapters.watermelondb": {"t": {"created": [{"id": "a"}]}},
        "syncperf.adapters.powersync": {"batch": [{"op": "PUT", "table": "t", "id": "1"}]},
        "syncperf.adapters.couchdb": {"docs": [{"_id": "a", "_rev": "1-x"}], "new_edits": False},
    }[kind]
    with capture(), pytest.raises((TypeError, ValueError)) as raised:  # strict: raised
        run(adapter(Secret()), body, {})
    assert "an object of type" in str(raised.value)
    assert "sk_live_secret" not in str(raised.value)


# --- the documentation's tables -------------------------------------------------------------

DOCS = Path(__file__).resolve().parents[2] / "docs" / "adapters.md"


def _tables(text: str) -> dict[str, list[list[str]]]:
    """Markdown tables by the heading above them: rows of cells, the header row first."""
    tables: dict[str, list[list[str]]] = {}
    heading = ""
    for line in text.splitlines():
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif line.startswith("|") and not line.startswith("|---"):
            cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
            tables.setdefault(heading, []).append(cells)
    return tables


def test_the_adapter_tables_list_every_adapter_once_in_well_formed_rows() -> None:
    import syncperf.adapters as package

    shipped = {
        f"{module}.{name}"
        for module in ("replicache", "zero", "watermelondb", "rxdb", "couchdb", "powersync")
        for name in getattr(package, module).__all__
        if isinstance(getattr(getattr(package, module), name), type)
    }
    tables = _tables(DOCS.read_text(encoding="utf-8"))
    for heading in ("The adapters", "What each adapter can and cannot see"):
        header, *rows = tables[heading]
        assert all(len(row) == len(header) for row in rows), heading
    listed = [row[2] for row in tables["The adapters"][1:]]
    assert sorted(re.findall(r"`(\w+\.\w+)`", " ".join(listed))) == sorted(shipped)
    seen = [row[0].strip("`") for row in tables["What each adapter can and cannot see"][1:]]
    assert sorted(seen) == sorted(shipped)


# --- each adapter test module runs alone --------------------------------------------------


def test_no_adapter_test_module_imports_another_test_module() -> None:
    # `pytest tests/unit/test_adapters_couchdb.py` alone used to fail at collection: it imported
    # this module, which imported it back (a cycle) for its payloads; shared helpers and
    # payloads live in tests/_adapters.py
    here = Path(__file__).resolve().parent
    for path in sorted(here.glob("test_adapters_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or "", *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            imported = [name for name in names if name.rpartition(".")[2].startswith("test_")]
            assert not imported, f"{path.name}:{node.lineno} imports {imported}"

"""``configure()``, ``setup_otlp()`` and ``setup_prometheus()`` options of the wrong type are a
``ConfigError`` naming the option, raised before anything changes: never a raw error, never
accepted to make every export fail later, never read as their truthiness (``"false"``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry

import syncperf
from syncperf import Config, ConfigError, _runtime
from syncperf.export import setup_otlp, setup_prometheus
from tests.unit.test_export_setup import clean  # noqa: F401 - the fixture

pytestmark = pytest.mark.usefixtures("clean")

Setup = Callable[[Any], object]


def _text(value: object) -> bool:
    return isinstance(value, str)


def _seconds(value: object) -> bool:
    return type(value) in (int, float) and 0 < value <= 86400  # type: ignore[operator]


def _never(value: object) -> bool:
    return False


OPTIONS: dict[str, tuple[Setup, Callable[[object], bool]]] = {
    # option: (a call passing the value, whether the value has the right type)
    "prometheus": (lambda v: syncperf.configure(prometheus=v), _never),
    "tracer_provider": (lambda v: syncperf.configure(tracer_provider=v), _never),
    "resource": (lambda v: syncperf.configure(resource=v), _never),
    "metric_exporters": (lambda v: syncperf.configure(metric_exporters=[v]), _never),
    "protocol": (lambda v: setup_otlp(protocol=v, environ={}), _text),
    "endpoint": (lambda v: setup_otlp(endpoint=v, environ={}), _text),
    "headers": (lambda v: setup_otlp(headers=v, environ={}), _never),
    "timeout": (lambda v: setup_otlp(timeout=v, environ={}), _seconds),
    "traces": (lambda v: setup_otlp(traces=v, metrics=False, environ={}), _never),
    "metrics": (lambda v: setup_otlp(metrics=v, traces=False, environ={}), _never),
    "global_meter_provider": (lambda v: setup_otlp(global_meter_provider=v, environ={}), _never),
    "host": (lambda v: setup_prometheus(0, host=v), _text),
    "registry": (lambda v: setup_prometheus(0, registry=v), _never),
}


def _untouched() -> None:
    assert _runtime.installed is None
    assert type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider"
    assert type(metrics.get_meter_provider()).__name__ == "_ProxyMeterProvider"


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("prometheus", "yes"),
        ("prometheus", 1),
        ("tracer_provider", 42),
        ("resource", "svc"),
        ("resource", {"service.name": "svc"}),
        ("metric_exporters", "x"),
        ("metric_exporters", InMemoryMetricReader()),
        ("protocol", 5),
        ("endpoint", 4318),
        ("endpoint", b"http://collector:4318"),
        ("headers", "a=b"),
        ("headers", [("a", "b")]),
        ("headers", {"a": 1}),
        ("headers", {1: "b"}),
        pytest.param("timeout", 10**400, id="timeout-10**400"),
        ("timeout", "10"),
        ("traces", "false"),
        ("traces", 1),
        ("metrics", "no"),
        ("global_meter_provider", "no"),
        ("host", 127),
        ("host", b"127.0.0.1"),
        ("registry", "x"),
        ("registry", CollectorRegistry),  # the class, not a registry
    ],
)
def test_a_value_of_the_wrong_type_is_a_config_error_naming_the_option(
    option: str, value: object
) -> None:
    call, _ = OPTIONS[option]
    with pytest.raises(ConfigError) as info:
        call(value)
    assert info.value.option == option
    _untouched()


def test_the_right_types_are_accepted() -> None:
    registry = CollectorRegistry()
    endpoint = setup_prometheus(0, host="127.0.0.1", registry=registry)
    try:
        syncperf.configure(
            prometheus=registry,
            resource=Resource.create({"service.name": "svc"}),
            tracer_provider=trace.NoOpTracerProvider(),
        )
        handle = setup_otlp(
            protocol="http/protobuf",
            endpoint="http://127.0.0.1:9",
            headers={"authorization": "Bearer t"},
            timeout=0.2,
            traces=False,
            metrics=True,
            global_meter_provider=False,
            environ={},
        )
        assert handle.tracer_provider is None and handle.metrics_protocol == "http/protobuf"
    finally:
        endpoint.close()


class _Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    __str__ = __repr__


WRONG = (
    st.builds(_Unprintable)
    | st.text(min_size=1).map(lambda s: s * (100_000 // len(s) + 1))  # a huge string
    | st.integers()
    | st.floats()
    | st.binary()
    | st.lists(st.integers(), min_size=1)
    | st.dictionaries(st.text(), st.integers() | st.builds(_Unprintable), min_size=1)
    | st.builds(object)
)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.sampled_from(sorted(OPTIONS)), WRONG)
def test_any_wrong_value_is_a_bounded_config_error(option: str, value: object) -> None:
    call, right_type = OPTIONS[option]
    if right_type(value):
        return
    with pytest.raises(ConfigError) as info:
        call(value)
    assert info.value.option == option
    message = str(info.value)
    assert len(message) < 600, message[:600]
    _untouched()


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("headers", {"authorization": "Bearer s3cret", "x-retries": 3}),
        ("headers", [("authorization", "Bearer s3cret")]),
        ("endpoint", b"https://user:s3cret@collector:4318"),
    ],
)
def test_a_rejected_header_or_endpoint_never_shows_its_secret(option: str, value: object) -> None:
    call, _ = OPTIONS[option]
    with pytest.raises(ConfigError) as info:
        call(value)
    assert "s3cret" not in str(info.value) + repr(info.value.value)


def _hostile(*args: object) -> Any:
    raise RuntimeError("a hostile operator ran")


_OPERATORS = [
    "__add__",
    "__radd__",
    "__sub__",
    "__rsub__",
    "__mul__",
    "__rmul__",
    "__truediv__",
    "__rtruediv__",
    "__floordiv__",
    "__mod__",
    "__lt__",
    "__le__",
    "__gt__",
    "__ge__",
    "__eq__",
    "__ne__",
    "__hash__",
    "__index__",
    "__int__",
    "__float__",
    "__bool__",
    "__round__",
    "__trunc__",
    "__neg__",
    "__abs__",
    "__repr__",
    "__str__",
    ").split(",
]
HostileInt = type("HostileInt", (int,), dict.fromkeys(_OPERATORS, _hostile))
HostileFloat = type("HostileFloat", (float,), dict.fromkeys(_OPERATORS, _hostile))
_STR_OPERATORS = [op for op in _OPERATORS if op not in ("__hash__", "__eq__", "__ne__")]  # a key
HostileStr = type(
    "HostileStr", (str,), dict.fromkeys([*_STR_OPERATORS, "strip", "upper"], _hostile)
)

NUMBER_OPTIONS = {
    "max_entities": HostileInt(50),
    "max_series": HostileInt(50),
    "span_queue_size": HostileInt(50),
    "trace_sample_rate": HostileFloat(1.0),
    "slow_threshold": HostileFloat(5.0),
    "overhead_budget": HostileFloat(0.5),
    "shed_cooldown": HostileFloat(5.0),
    "export_interval": HostileInt(60),
    "export_timeout": HostileFloat(30.0),
    "shutdown_timeout": HostileFloat(5.0),
    "sync_log_sample_rate": HostileFloat(1.0),
    "sync_log_rate_limit": HostileFloat(5.0),
}


@pytest.mark.parametrize("option", sorted(NUMBER_OPTIONS))
def test_a_number_subclass_is_kept_as_a_plain_number(option: str) -> None:
    config = syncperf.configure(**{option: NUMBER_OPTIONS[option]})
    kept = getattr(config, option)
    assert type(kept) is (int if isinstance(NUMBER_OPTIONS[option], int) and option in {
        "max_entities", "max_series", "span_queue_size"} else float)  # fmt: skip
    for i in range(60):  # past max_series and the log rate limit: their operators run
        with syncperf.sync_operation("pull", entity=f"e{i}") as op:
            op.set_batch_size(3)


def test_levels_of_int_and_str_subclasses_are_kept_as_plain_values() -> None:
    config = syncperf.configure(
        sync_log_levels={HostileStr("error"): HostileInt(40), "success": HostileStr("INFO")}
    )
    assert dict(config.sync_log_levels) == {**Config().sync_log_levels, "error": 40, "success": 20}
    assert all(type(k) is str and type(v) is int for k, v in config.sync_log_levels.items())
    with syncperf.sync_operation("pull", entity="todo") as op:
        op.set_batch_size(1)


async def test_middleware_and_outbox_number_options_are_kept_as_plain_numbers() -> None:
    """The middleware's and the outbox's own number options: checked, then kept plain, so
    a subclass's operators never run per request or per collection."""
    import httpx
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from syncperf.asgi import SyncPerfMiddleware
    from syncperf.outbox import Outbox
    from syncperf.testing import capture

    async def push(request: Any) -> JSONResponse:
        return JSONResponse({"ok": bool(await request.body())})

    app = SyncPerfMiddleware(
        Starlette(routes=[Route("/sync/push", push, methods=["POST"])]),
        routes={"/sync/push": "push"},
        idempotency_ttl=HostileFloat(60.0),
        idempotency_max_keys=HostileInt(2),
        max_body_bytes=HostileInt(1000),
    )
    with capture() as cap:
        outbox = Outbox("orders", stats=lambda: (1, 2.0), stats_timeout=HostileFloat(2.0))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            for i in range(5):  # past idempotency_max_keys, with a body to read
                headers = {"Idempotency-Key": f"k{i % 3}"}
                answer = await http.post("/sync/push", content=b"x" * 10, headers=headers)
                assert answer.status_code == 200
        assert cap.total("sync.operation.duration", {"sync.operation": "push"}) == 5
        assert [p.value for p in cap.points("outbox.depth")] == [1]
        del outbox

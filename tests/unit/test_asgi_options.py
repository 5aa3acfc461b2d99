"""The options of ``SyncPerfMiddleware`` and ``instrument_app``: what is accepted is used as
given, anything else is one ``ConfigError`` naming the option, when the app is built."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest
from fastapi import FastAPI
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

import syncperf
from syncperf.asgi import MiddlewareOptions, SyncPerfMiddleware, instrument_app
from syncperf.testing import capture

ROUTES = {"/sync/pull": "pull"}


async def _replaying_app(scope: Any, receive: Any, send: Any) -> None:
    name = scope["replay_name"].encode("ascii")
    await send({"type": "http.response.start", "status": 200, "headers": [(name, b"true")]})
    await send({"type": "http.response.body", "body": b"{}"})


def _request(mw: SyncPerfMiddleware, headers: list[tuple[bytes, bytes]], replay: str) -> None:
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/sync/pull",
        "headers": headers,
        "query_string": b"",
        "root_path": "",
        "scheme": "http",
        "http_version": "1.1",
        "replay_name": replay,
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        return None

    asyncio.run(mw(scope, receive, send))


@pytest.mark.parametrize("option", ["idempotency_header", "replay_header"])
@pytest.mark.parametrize(
    "name",
    ["Idempotency\u2013Key", "Idempotency Key", "Idempotent-Replayed: true", "x\r\ny", "é"],
)
def test_a_header_option_that_is_no_http_token_is_a_config_error(option: str, name: str) -> None:
    with pytest.raises(syncperf.ConfigError) as raised:
        SyncPerfMiddleware(_replaying_app, ROUTES, **{option: name})
    assert raised.value.option == option
    assert raised.value.value == name  # a header's name, not a secret: shown as given
    assert "!#$%&'*+-.^_`|~" in raised.value.accepted


def test_content_length_is_not_accepted_as_the_idempotency_header() -> None:
    with pytest.raises(syncperf.ConfigError) as raised:
        SyncPerfMiddleware(_replaying_app, ROUTES, idempotency_header="Content-Length")
    assert raised.value.option == "idempotency_header"


@settings(max_examples=150, deadline=None)
@given(name=st.one_of(st.text(), st.from_regex(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", fullmatch=True)))
@example(name="Idempotency\u2013Key")
@example(name="X-Request-Key")
def test_a_header_option_is_used_as_given_or_refused(name: str) -> None:
    for option in ("idempotency_header", "replay_header"):
        try:
            mw = SyncPerfMiddleware(_replaying_app, ROUTES, **{option: name}, idempotency_ttl=60)
        except syncperf.ConfigError as error:
            assert error.option == option
            continue
        with capture() as cap:  # the name matches whatever its case (servers send lowercase)
            if option == "idempotency_header":
                key = [(name.lower().encode("ascii"), b"key-1")]
                _request(mw, key, "x-other")
                _request(mw, key, "x-other")  # the same key again, within the ttl: a hit
            else:
                _request(mw, [], name.swapcase())
            assert cap.total("sync.idempotency.hits") == 1


def test_a_misspelt_instrument_app_option_is_a_config_error_listing_the_options() -> None:
    app = FastAPI()
    with pytest.raises(syncperf.ConfigError) as raised:
        instrument_app(app, ROUTES, http_metric=False)  # type: ignore[call-arg]
    assert raised.value.option == "http_metric"
    assert "http_metrics" in raised.value.accepted
    assert "routes" in raised.value.accepted
    assert app.user_middleware == []


@settings(max_examples=100, deadline=None)
@given(name=st.text(min_size=1), value=st.text(min_size=8).map(lambda s: "tok-" + s))
def test_an_unknown_instrument_app_option_never_shows_its_value(name: str, value: str) -> None:
    assume(name not in {"app", "routes", *MiddlewareOptions.__annotations__})
    with pytest.raises(syncperf.ConfigError) as raised:
        instrument_app(FastAPI(), ROUTES, **{name: value})
    assert raised.value.option == name
    assert value not in str(raised.value)  # a typo's value may be a token


def test_instrument_app_takes_the_keyword_options_of_the_middleware() -> None:
    theirs = list(inspect.signature(SyncPerfMiddleware).parameters.values())[2:]  # app, routes
    assert list(MiddlewareOptions.__annotations__) == [p.name for p in theirs]
    assert all(p.kind is p.KEYWORD_ONLY for p in theirs)


def test_instrument_app_returns_the_app_it_was_given() -> None:
    app = FastAPI()
    assert instrument_app(app, ROUTES, http_metrics=False, idempotency_ttl=5) is app
    (middleware,) = app.user_middleware
    assert middleware.kwargs["http_metrics"] is False
    assert middleware.kwargs["idempotency_ttl"] == 5

"""A scrape whose client never reads its answer held that answer (and, on the WSGI server,
a thread) for ever: forty such connections took a process from 36 to 511 MiB. Both
endpoints now serve at most ``MAX_SCRAPES`` at once, built or being sent, and answer 503
past it; the WSGI server drops a client that has not read its answer within
``SCRAPE_TIMEOUT``; the ASGI app sends in parts, so the server's flow control holds the
rest in the app, under that cap."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily

from syncperf.export import _serve, prometheus_asgi_app, setup_prometheus
from tests.unit.test_export_setup import clean

__all__ = ["clean"]  # the fixture, used by name


class _Big:
    """A collector whose exposition is ~4 MiB."""

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        family = GaugeMetricFamily("big", "A big one.", labels=["i"])
        for i in range(60_000):
            family.add_metric([f"{i:060d}"], 1.0)
        yield family


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(_Big())
    return registry


def _stuck(port: int, n: int) -> list[socket.socket]:
    """``n`` scrapes that never read their answer."""
    held = []
    for _ in range(n):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        held.append(sock)
    return held


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def _request_threads() -> int:
    return sum("process_request" in t.name for t in threading.enumerate())


@pytest.mark.usefixtures("clean")
def test_scrapes_never_read_are_capped_and_dropped_after_the_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_serve, "SCRAPE_TIMEOUT", 5.0)
    endpoint = setup_prometheus(port=0, registry=_registry())
    held = _stuck(endpoint.port, 3 * _serve.MAX_SCRAPES)
    try:
        deadline = time.monotonic() + 4  # those past the cap are answered 503 and end
        while _request_threads() > _serve.MAX_SCRAPES and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _request_threads() <= _serve.MAX_SCRAPES
        started = time.monotonic()
        assert _get(endpoint.url) == 503  # quickly, not after the stuck ones
        assert time.monotonic() - started < 3
        deadline = time.monotonic() + 20
        while _request_threads() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _request_threads() == 0  # dropped after SCRAPE_TIMEOUT, their sockets open
        assert _get(endpoint.url) == 200
    finally:
        for sock in held:
            sock.close()


@pytest.mark.usefixtures("clean")
def test_a_scrape_that_reads_is_answered_after_stuck_ones_left() -> None:
    endpoint = setup_prometheus(port=0, registry=_registry())
    held = _stuck(endpoint.port, 2)
    time.sleep(0.3)
    for sock in held:
        sock.close()
    deadline = time.monotonic() + 10
    while _get(endpoint.url) != 200:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_the_asgi_app_caps_scrapes_in_flight_and_the_loop_runs() -> None:
    app = prometheus_asgi_app(_registry())
    blocked = asyncio.Event()

    async def run() -> list[int]:
        stuck_sends = 0

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def never_read(message: dict[str, Any]) -> None:  # a client that never reads
            nonlocal stuck_sends
            if message["type"] == "http.response.body" and message.get("more_body"):
                stuck_sends += 1
                await blocked.wait()

        statuses: list[int] = []

        async def reading(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
        stuck = [
            asyncio.ensure_future(app(scope, receive, never_read))
            for _ in range(3 * _serve.MAX_SCRAPES)
        ]
        for _ in range(500):
            await asyncio.sleep(0.02)  # the loop runs meanwhile
            if stuck_sends == _serve.MAX_SCRAPES:
                break
        await asyncio.sleep(0.1)
        assert stuck_sends == _serve.MAX_SCRAPES  # one output each, held by the capped ones
        assert sum(task.done() for task in stuck) == 2 * _serve.MAX_SCRAPES  # the rest: 503
        await asyncio.wait_for(app(scope, receive, reading), 2)  # 503 at once
        blocked.set()
        await asyncio.wait_for(asyncio.gather(*stuck), 10)
        await app(scope, receive, reading)
        return statuses

    assert asyncio.run(run()) == [503, 200]


def test_the_asgi_app_stops_sending_to_a_client_that_does_not_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_serve, "SCRAPE_TIMEOUT", 0.3)
    app = prometheus_asgi_app(_registry())

    async def run() -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def never_read(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                await asyncio.sleep(60)

        scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
        await asyncio.wait_for(app(scope, receive, never_read), 5)

    asyncio.run(run())


def _closed_within(sock: socket.socket, seconds: float, trickle: bytes) -> float | None:
    """Send ``trickle`` a byte every 0.05 s: the seconds until the server closed, else None."""
    started = time.monotonic()
    sock.settimeout(0.05)
    for i in range(len(trickle)):
        if time.monotonic() - started > seconds:
            return None
        try:
            sock.send(trickle[i : i + 1])
            if sock.recv(1024) == b"":
                return time.monotonic() - started
            return None  # an answer: the request was read to its end
        except TimeoutError:
            continue
        except OSError:  # reset, broken pipe: closed
            return time.monotonic() - started
    return None


@pytest.mark.usefixtures("clean")
def test_a_client_trickling_its_request_is_dropped_at_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_serve, "SCRAPE_TIMEOUT", 0.5)
    endpoint = setup_prometheus(port=0)
    request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 200 + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", endpoint.port)) as sock:
        closed = _closed_within(sock, 5, request)  # every byte within the per-read timeout
    assert closed is not None and closed < 2
    assert _get(endpoint.url) == 200


@pytest.mark.usefixtures("clean")
def test_connections_over_the_cap_are_closed_without_a_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_serve, "MAX_CONNECTIONS", 3)
    endpoint = setup_prometheus(port=0)
    held = [socket.create_connection(("127.0.0.1", endpoint.port)) for _ in range(10)]
    try:
        deadline = time.monotonic() + 5
        while _request_threads() < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # the rest accepted too
        assert _request_threads() == 3
        closed = 0
        for sock in held:
            sock.settimeout(0.2)
            with contextlib.suppress(TimeoutError):
                closed += sock.recv(1) == b""
        assert closed == 7
        for sock in held[:3]:  # the capped ones, sent late, are still answered
            sock.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            sock.settimeout(5)
            assert sock.recv(12) == b"HTTP/1.0 200"
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 5
    while _request_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _get(endpoint.url) == 200


@pytest.mark.usefixtures("clean")
def test_scrapes_up_to_the_cap_are_served_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_serve, "SCRAPE_TIMEOUT", 2.0)
    endpoint = setup_prometheus(port=0)
    idle = [socket.create_connection(("127.0.0.1", endpoint.port)) for _ in range(2)]
    try:
        results: list[int] = []
        threads = [
            threading.Thread(target=lambda: results.append(_get(endpoint.url)))
            for _ in range(_serve.MAX_SCRAPES)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert results == [200] * _serve.MAX_SCRAPES
    finally:
        for sock in idle:
            sock.close()


def _handshakes(port: int, n: int, seconds: float) -> tuple[int, list[socket.socket]]:
    """Connections among ``n`` opened at once whose handshake completes within ``seconds``."""
    socks = []
    for _ in range(n):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        socks.append(sock)
    time.sleep(seconds)
    done = sum(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0 and _peer(sock) for sock in socks
    )
    return done, socks


def _peer(sock: socket.socket) -> bool:
    try:
        sock.getpeername()
    except OSError:  # not connected (yet): its SYN was dropped
        return False
    return True


@pytest.mark.usefixtures("clean")
def test_a_burst_of_connections_waits_in_the_listen_backlog() -> None:
    """A burst of scrapers and health checks waits to be accepted: with socketserver's
    backlog of 5, the connections past the sixth had their SYN dropped (a second's retry)."""
    endpoint = setup_prometheus(port=0)
    server = endpoint._server  # type: ignore[attr-defined]
    server.shutdown()  # not accepting: the burst waits in the backlog
    done, socks = _handshakes(endpoint.port, 40, 0.5)
    try:
        assert server.request_queue_size >= 64
        assert done == 40
        threading.Thread(target=server.serve_forever, daemon=True).start()
        for sock in socks:
            sock.setblocking(True)
            sock.settimeout(5)
            with contextlib.suppress(OSError):  # past the connection cap: closed at once
                sock.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
                assert sock.recv(12) in (b"", b"HTTP/1.0 200", b"HTTP/1.0 503")
    finally:
        for sock in socks:
            sock.close()
    assert _get(endpoint.url) == 200

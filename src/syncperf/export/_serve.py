"""The Prometheus scrape endpoints: prometheus_client's WSGI server and ASGI app, serving
through ``_metrics.prometheus.scrape`` (syncperf's series rendered without metric-family
objects; every other collector of the registry as prometheus_client encodes it)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs

from syncperf._metrics.prometheus import scrape

SCRAPE_THREADS = 2
"""Scrapes an ASGI app builds at once (two Prometheus servers of an HA pair); more wait their
turn, as coroutines."""

MAX_SCRAPES = 4
"""Scrapes an endpoint serves at once, built or being sent (each holds its whole answer):
past it a scrape is answered 503 at once. A client that never reads its answer held it, and
on the WSGI server a thread, for ever (forty such connections: 36 to 511 MiB)."""

SCRAPE_TIMEOUT = 30.0
"""Seconds a client has to send its request and read the whole answer (Prometheus' scrape
timeout is 10 s by default): past them the WSGI server drops the connection and the ASGI app
stops sending, freeing the scrape's place."""

MAX_CONNECTIONS = 16
"""Connections the server of ``setup_prometheus()`` holds at once, each on a thread of its
own until answered or ``SCRAPE_TIMEOUT``: past it a connection is closed at once, with no
thread (a client trickling its request held one each, for ever)."""

LISTEN_BACKLOG = min(128, socket.SOMAXCONN)
"""Connections the kernel holds for the server of ``setup_prometheus()`` until it accepts them
(``listen()``'s backlog; socketserver's is 5): a burst of scrapers and health checks waits
there, where past the sixth the kernel dropped their SYNs (a second's retry, or a refusal).
Accepted, they are served or closed under ``MAX_CONNECTIONS``: the backlog holds no thread."""

SEND_PART = 1 << 16
"""Bytes per ``http.response.body`` message of the ASGI app: sent in parts, the server's flow
control holds back a client that does not read (uvicorn buffers 64 KiB), instead of taking
the whole answer into its buffers at once."""

_BUSY = (
    "503 Service Unavailable",
    [("Content-Type", "text/plain; charset=utf-8")],
    f"# HTTP 503 Service Unavailable: {MAX_SCRAPES} scrapes in flight; try again\n".encode(),
)


class _Answer(list[bytes]):
    """A WSGI answer whose ``close()`` (called by the server once it is sent, or failed)
    frees the scrape's place."""

    def __init__(self, output: bytes, release: Callable[[], None]) -> None:
        super().__init__([output])
        self._release: Callable[[], None] | None = release

    def close(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()


def wsgi_app(registry: Any) -> Callable[..., list[bytes]]:
    """A WSGI app answering as ``prometheus_client.make_wsgi_app`` does, at most
    ``MAX_SCRAPES`` at once (503 past it)."""
    slots = threading.BoundedSemaphore(MAX_SCRAPES)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        method = environ["REQUEST_METHOD"]
        if method == "OPTIONS":
            status, headers, output = "200 OK", [("Allow", "OPTIONS,GET")], b""
        elif method != "GET":
            status, headers = "405 Method Not Allowed", [("Allow", "OPTIONS,GET")]
            output = f"# HTTP {status}: {method}; use OPTIONS or GET\n".encode()
        elif environ["PATH_INFO"] == "/favicon.ico":
            status, headers, output = "200 OK", [], b""
        elif not slots.acquire(blocking=False):
            status, headers, output = _BUSY
        else:
            try:
                status, headers, output = scrape(
                    registry,
                    environ.get("HTTP_ACCEPT"),
                    environ.get("HTTP_ACCEPT_ENCODING"),
                    parse_qs(environ.get("QUERY_STRING", "")),
                )
                start_response(status, headers)
            except BaseException:
                slots.release()
                raise
            return _Answer(output, slots.release)
        start_response(status, headers)
        return [output]

    return app


class _Discarded(io.StringIO):
    """wsgiref's error output: a client that left or timed out is no error of the app's."""

    def write(self, text: str) -> int:
        return len(text)


class _Timed(io.RawIOBase):
    """A connection's socket, read and written within what is left of its deadline (a
    socket's timeout alone is per call: a byte every few seconds renewed it for ever)."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self._sock, self._deadline = sock, deadline

    def _arm(self) -> None:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the connection's time is up")
        self._sock.settimeout(left)

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        self._arm()
        return self._sock.recv_into(buffer)

    def write(self, data: Any) -> int:
        self._arm()
        self._sock.sendall(data)  # its timeout bounds the whole call
        return memoryview(data).nbytes


def start_server(port: int, host: str, registry: Any) -> tuple[Any, threading.Thread]:
    """Serve ``registry`` on a daemon thread, as ``prometheus_client.start_http_server``,
    giving each client ``SCRAPE_TIMEOUT`` seconds in all, ``MAX_CONNECTIONS`` at once."""
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client.exposition import ThreadingWSGIServer

    connections = threading.BoundedSemaphore(MAX_CONNECTIONS)

    class Server(ThreadingWSGIServer):
        address_family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        request_queue_size = LISTEN_BACKLOG

        def process_request(self, request: Any, client_address: Any) -> None:
            if not connections.acquire(blocking=False):
                self.shutdown_request(request)  # over the cap: closed, no thread
                return
            try:
                super().process_request(request, client_address)
            except BaseException:  # no thread started
                connections.release()
                raise

        def process_request_thread(self, request: Any, client_address: Any) -> None:
            try:
                super().process_request_thread(request, client_address)
            finally:
                connections.release()

    class Quiet(WSGIRequestHandler):
        timeout = SCRAPE_TIMEOUT  # the connection's socket timeout

        def setup(self) -> None:
            super().setup()
            self.rfile.close()  # the socket's own file: replaced
            timed = _Timed(self.connection, time.monotonic() + SCRAPE_TIMEOUT)
            self.rfile = io.BufferedReader(timed)
            self.wfile = timed  # type: ignore[assignment]  # unbuffered, as socketserver's

        def handle(self) -> None:
            with contextlib.suppress(OSError):  # a request not sent in time, a client gone
                super().handle()

        def get_stderr(self) -> Any:
            return _Discarded()

        def log_message(self, format: str, *args: Any) -> None:
            """No access log."""

    server = make_server(host, port, wsgi_app(registry), Server, handler_class=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


async def _answer(
    receive: Callable[..., Any], send: Any, answer: tuple[str, list[tuple[str, str]], bytes]
) -> None:
    """Send ``answer`` in parts of ``SEND_PART`` bytes, stopping (the server then closes the
    connection) when the client has not read it within ``SCRAPE_TIMEOUT``."""
    status, response, output = answer
    payload = await receive()
    if payload.get("type") != "http.request":
        return
    start = {"type": "http.response.start", "status": int(status.split(" ")[0])}
    start["headers"] = [(k.encode(), v.encode()) for k, v in response]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SCRAPE_TIMEOUT
    messages: list[dict[str, Any]] = [start]
    for offset in range(0, max(len(output), 1), SEND_PART):
        part = output[offset : offset + SEND_PART]
        more = offset + SEND_PART < len(output)
        messages.append({"type": "http.response.body", "body": part, "more_body": more})
    for message in messages:
        try:
            await asyncio.wait_for(send(message), max(deadline - loop.time(), 0.0))
        except asyncio.TimeoutError:
            return


def asgi_app(registry: Any) -> Callable[..., Any]:
    """An ASGI app answering as ``prometheus_client.make_asgi_app`` does, at most
    ``MAX_SCRAPES`` at once (503 past it).

    The scrape runs on a thread of the app's own (``SCRAPE_THREADS``), never on the event
    loop: collecting may wait (an outbox probe on a locked table waits up to its
    ``stats_timeout``), and every request of the worker would wait with it. A thread pool of
    its own, so that scrapes waiting never take the loop's default executor from the
    application's ``asyncio.to_thread`` calls. The pool (and the count of scrapes in flight)
    is built by the first scrape of each process: a worker forked (gunicorn ``--preload``)
    after the parent served a scrape inherits a pool that counts the parent's idle thread as
    its own, and its scrapes were never run.
    """
    pool: dict[int, tuple[ThreadPoolExecutor, threading.BoundedSemaphore]] = {}  # by pid

    def threads() -> tuple[ThreadPoolExecutor, threading.BoundedSemaphore]:
        pid = os.getpid()
        found = pool.get(pid)
        if found is None:  # two loops' threads racing here build a spare pool: harmless
            pool.clear()  # a parent's pool: its threads are not this process's
            executor = ThreadPoolExecutor(SCRAPE_THREADS, thread_name_prefix="syncperf-scrape")
            found = pool[pid] = (executor, threading.BoundedSemaphore(MAX_SCRAPES))
        return found

    async def app(scope: dict[str, Any], receive: Callable[..., Any], send: Any) -> None:
        assert scope.get("type") == "http"
        headers = scope.get("headers") or []

        def header(name: bytes) -> str:  # latin-1, as WSGI does: any byte, never an error
            return ",".join(v.decode("latin-1") for k, v in headers if k.lower() == name)

        executor, slots = threads()
        if not slots.acquire(blocking=False):
            await _answer(receive, send, _BUSY)
            return
        try:
            answer = await asyncio.get_running_loop().run_in_executor(
                executor,
                scrape,
                registry,
                header(b"accept"),
                header(b"accept-encoding"),
                parse_qs(scope.get("query_string", b"").decode("latin-1")),
            )
            await _answer(receive, send, answer)
        finally:
            slots.release()

    return app

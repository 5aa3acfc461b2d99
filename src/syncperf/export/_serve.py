"""The Prometheus scrape endpoints: prometheus_client's WSGI server and ASGI app, serving
through ``_metrics.prometheus.scrape`` (syncperf's series rendered without metric-family
objects; every other collector of the registry as prometheus_client encodes it)."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs

from syncperf._metrics.prometheus import scrape

SCRAPE_THREADS = 2
"""Scrapes an ASGI app runs at once (two Prometheus servers of an HA pair); more wait their
turn, as coroutines."""


def wsgi_app(registry: Any) -> Callable[..., list[bytes]]:
    """A WSGI app answering as ``prometheus_client.make_wsgi_app`` does."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        method = environ["REQUEST_METHOD"]
        if method == "OPTIONS":
            status, headers, output = "200 OK", [("Allow", "OPTIONS,GET")], b""
        elif method != "GET":
            status, headers = "405 Method Not Allowed", [("Allow", "OPTIONS,GET")]
            output = f"# HTTP {status}: {method}; use OPTIONS or GET\n".encode()
        elif environ["PATH_INFO"] == "/favicon.ico":
            status, headers, output = "200 OK", [], b""
        else:
            status, headers, output = scrape(
                registry,
                environ.get("HTTP_ACCEPT"),
                environ.get("HTTP_ACCEPT_ENCODING"),
                parse_qs(environ.get("QUERY_STRING", "")),
            )
        start_response(status, headers)
        return [output]

    return app


def start_server(port: int, host: str, registry: Any) -> tuple[Any, threading.Thread]:
    """Serve ``registry`` on a daemon thread, as ``prometheus_client.start_http_server``."""
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client.exposition import ThreadingWSGIServer

    class Server(ThreadingWSGIServer):
        address_family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            """No access log."""

    server = make_server(host, port, wsgi_app(registry), Server, handler_class=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


def asgi_app(registry: Any) -> Callable[..., Any]:
    """An ASGI app answering as ``prometheus_client.make_asgi_app`` does.

    The scrape runs on a thread of the app's own (``SCRAPE_THREADS``), never on the event
    loop: collecting may wait (an outbox probe on a locked table waits up to its
    ``stats_timeout``), and every request of the worker would wait with it. A thread pool of
    its own, so that scrapes waiting never take the loop's default executor from the
    application's ``asyncio.to_thread`` calls. The pool is built by the first scrape of each
    process: a worker forked (gunicorn ``--preload``) after the parent served a scrape inherits
    a pool that counts the parent's idle thread as its own, and its scrapes were never run.
    """
    pool: dict[int, ThreadPoolExecutor] = {}  # by pid: the current process's only

    def threads() -> ThreadPoolExecutor:
        pid = os.getpid()
        found = pool.get(pid)
        if found is None:  # two loops' threads racing here build a spare pool: harmless
            pool.clear()  # a parent's pool: its threads are not this process's
            found = pool[pid] = ThreadPoolExecutor(
                SCRAPE_THREADS, thread_name_prefix="syncperf-scrape"
            )
        return found

    async def app(scope: dict[str, Any], receive: Callable[..., Any], send: Any) -> None:
        assert scope.get("type") == "http"
        headers = scope.get("headers") or []

        def header(name: bytes) -> str:  # latin-1, as WSGI does: any byte, never an error
            return ",".join(v.decode("latin-1") for k, v in headers if k.lower() == name)

        status, response, output = await asyncio.get_running_loop().run_in_executor(
            threads(),
            scrape,
            registry,
            header(b"accept"),
            header(b"accept-encoding"),
            parse_qs(scope.get("query_string", b"").decode("latin-1")),
        )
        payload = await receive()
        if payload.get("type") == "http.request":
            start = {"type": "http.response.start", "status": int(status.split(" ")[0])}
            start["headers"] = [(k.encode(), v.encode()) for k, v in response]
            await send(start)
            await send({"type": "http.response.body", "body": output})

    return app

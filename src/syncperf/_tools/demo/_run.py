"""One demo run: telemetry set-up, the service under uvicorn, the clients, the summary."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from rich.console import Console
from rich.live import Live

from syncperf import _runtime
from syncperf._config import Config
from syncperf._tools._files import replace_file
from syncperf._tools.demo._client_checks import client_checks
from syncperf._tools.demo._clients import Behaviour, Tally, drive
from syncperf._tools.demo._schema import ENTITIES, N_PLUS_ONE_ENTITY, ShownUrl
from syncperf._tools.demo._service import Service
from syncperf._tools.demo._signals import on_stop_signals, sigterm_raises
from syncperf._tools.demo._stats import (
    Snapshot,
    alert_report,
    client_stats,
    operation_stats,
    operations,
    outbox_stats,
    overhead,
    plan_findings,
    pool_stats,
)
from syncperf._tools.demo._view import Warnings, live_view, plain_line, print_summary
from syncperf.exceptions import ConfigError

HUNG_GRACE = 60.0
"""Seconds past ``--duration`` that requests still in flight get before they are abandoned."""


@dataclass(frozen=True)
class Options:
    """What ``syncperf demo`` was asked to do (see ``syncperf demo --help``)."""

    duration: float = 20.0
    clients: int = 20
    seed: int = 0
    database_url: str | None = None
    otlp: str | None = None
    prometheus_port: int | None = None
    tui: bool = True
    json_path: str | None = None
    interval: float = 1.0


class UvicornThread:
    """The service under uvicorn on loopback, in a thread (``should_exit`` stops it)."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            loop="asyncio",
            http="h11",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="demo-uvicorn", daemon=True)

    def start(self, timeout: float = 30.0) -> str:
        """Start serving; returns the base URL."""
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        sockets = self.server.servers[0].sockets
        host, port = sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        """Ask uvicorn to exit and wait for it."""
        self.server.should_exit = True
        self.thread.join(15)


@contextlib.contextmanager
def telemetry(options: Options, console: Console | None = None) -> Iterator[_runtime.Runtime]:
    """Configure syncperf for the run (OTLP and/or a Prometheus endpoint when asked).

    The Prometheus port is bound first, so a busy ``--prometheus-port`` changes nothing;
    whatever was set up is undone when a later step fails, and when the run ends.

    Raises:
        ConfigError: the Prometheus port cannot be bound, or an OTLP setting is rejected.
    """
    registry: Any = None
    cleanup: list[Callable[[], object]] = []
    try:
        if options.prometheus_port is not None:
            from prometheus_client import CollectorRegistry, start_http_server

            registry = CollectorRegistry()
            try:
                server, _thread = start_http_server(
                    options.prometheus_port, addr="127.0.0.1", registry=registry
                )
            except OSError as exc:
                raise ConfigError(
                    "--prometheus-port",
                    options.prometheus_port,
                    f"a free port on 127.0.0.1 ({exc.strerror or exc})",
                ) from None
            cleanup.append(server.server_close)
            cleanup.append(server.shutdown)
            port = int(server.server_address[1])  # the one bound (--prometheus-port 0 picks)
            (console or Console()).print(f"Prometheus metrics on http://127.0.0.1:{port}/metrics")
        if options.otlp:
            from syncperf.export import setup_otlp

            installed = setup_otlp(
                endpoint=options.otlp, export_interval=5.0, prometheus=registry or False
            )
            rt = _runtime.current()
            cleanup.append(installed.shutdown)
        else:
            rt = _runtime.Runtime(Config.from_env(prometheus=registry or False))
            previous = _runtime.replace(rt)

            def restore() -> None:
                _runtime.replace(previous)
                rt.shutdown()

            cleanup.append(restore)
    except BaseException:
        _undo(cleanup)
        raise
    try:
        yield rt
    finally:
        _undo(cleanup)


def _undo(cleanup: list[Callable[[], object]]) -> None:
    """Run clean-up steps newest first."""
    for step in reversed(cleanup):
        step()


def run(options: Options, console: Console | None = None) -> dict[str, Any]:
    """Run the demo; returns the summary (also printed, and written to ``json_path``)."""
    console = console or Console()
    with contextlib.ExitStack() as stack:
        stack.enter_context(sigterm_raises())  # clean-up as after Ctrl-C, outside _simulate
        url = options.database_url
        if url is None:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="syncperf-demo-"))
            url = f"sqlite:///{Path(tmp) / 'demo.db'}"
        warnings = stack.enter_context(Warnings().installed())
        rt = stack.enter_context(telemetry(options, console))
        service = _service(url, options)
        stack.callback(service.close)
        server = UvicornThread(service.app)
        base_url = server.start()
        stack.callback(server.stop)
        service.start_relay()
        reader = rt.reader()
        stack.callback(reader.close)
        tui = options.tui and console.is_terminal
        if not tui:
            console.print(
                f"syncperf demo: service on {base_url} ({service.engine.dialect.name}), "
                f"{options.clients} clients for {options.duration:g} s"
            )
        started = time.monotonic()
        tally, stopped_by = asyncio.run(
            _simulate(options, base_url, reader, console, tui, warnings)
        )
        seconds = time.monotonic() - started
        _wait_idle(rt)
        if service.handle is not None and service.handle.plans is not None:
            service.handle.plans.wait()  # plans still being read count in the summary
        service.stop_relay()
        snap = Snapshot.of(reader.collect(), time.monotonic())
        summary = summarize(snap, tally, service, options, seconds, stopped_by)
        print_summary(console, summary, snap)
        if options.json_path:
            _write_json(options.json_path, summary)
            console.print(f"summary written to {options.json_path}")
    return summary


def _write_json(path: str, summary: dict[str, Any]) -> None:
    """The summary as JSON at ``path`` (checked before the run; a disk can still fill up)."""
    try:
        replace_file(path, json.dumps(summary, indent=2, default=str))
    except OSError as exc:
        raise ConfigError("--json", path, f"a file the demo can write ({exc.strerror})") from None


def _service(url: str, options: Options) -> Service:
    """The demo service on ``url``; a URL that cannot be used is a ``ConfigError`` naming
    ``--database-url`` (password and query values hidden) and the reason, in one line."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return Service(url, seed=options.seed)
    except (SQLAlchemyError, ImportError, ValueError) as exc:  # ValueError: a bad port
        shown = ShownUrl.of(url)
        reason = shown.scrub(str(getattr(exc, "orig", None) or exc)).strip().splitlines()
        raise ConfigError(
            "--database-url",
            shown.text,
            "a SQLAlchemy URL of a database the demo can reach, e.g. "
            f"postgresql://user@host/db ({type(exc).__name__}: {reason[0] if reason else ''})",
        ) from None


async def _simulate(
    options: Options,
    base_url: str,
    reader: Any,
    console: Console,
    tui: bool,
    warnings: Warnings,
) -> tuple[Tally, str | None]:
    """Drive the clients for the duration (or until Ctrl-C or SIGTERM), showing progress;
    returns the tally and the name of the signal that stopped the run, if one did."""
    stop = asyncio.Event()
    tally = Tally()
    stopped_by: str | None = None
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(
        drive(
            base_url, options.clients, stop, seed=options.seed, behaviour=Behaviour(), tally=tally
        )
    )

    def on_signal(received: signal.Signals) -> None:
        nonlocal stopped_by
        if stopped_by is not None:  # a second Ctrl-C (or SIGTERM): abandon requests in flight
            task.cancel()
        stopped_by = stopped_by or received.name
        stop.set()

    started = loop.time()
    previous: Snapshot | None = None
    live = Live(console=console, auto_refresh=False, transient=True) if tui else None
    with on_stop_signals(loop, on_signal), live if live is not None else contextlib.nullcontext():
        while not task.done():
            if loop.time() - started >= options.duration:
                stop.set()
            await asyncio.wait({task}, timeout=options.interval)  # never raises, even cancelled
            snap = Snapshot.of(await asyncio.to_thread(reader.collect), time.monotonic())
            elapsed = min(loop.time() - started, options.duration)
            if live is not None:
                view = live_view(snap, previous, elapsed, options.duration, warnings)
                live.update(view, refresh=True)
            elif not task.done():
                console.print(plain_line(snap, previous, elapsed), highlight=False)
                for message in warnings.take():
                    console.print(f"  warning: {message}", highlight=False, markup=False)
            previous = snap
            if stop.is_set() and loop.time() - started > options.duration + HUNG_GRACE:
                task.cancel()  # requests hung for a minute past the end: give up on them
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return tally, stopped_by


def _wait_idle(rt: _runtime.Runtime, timeout: float = 10.0) -> None:
    """Wait until no sync operation is in flight (the last responses may precede their end)."""
    deadline = time.monotonic() + timeout
    while any(rt.inflight.values()) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)


def summarize(
    snap: Snapshot,
    tally: Tally,
    service: Service,
    options: Options,
    seconds: float,
    stopped_by: str | None,
) -> dict[str, Any]:
    """The summary: syncperf's numbers, the simulator's, their comparison and the alerts."""
    ops = [operation_stats(snap, op, entity) for op, entity in operations(snap)]
    checks: list[dict[str, Any]] = []

    def check(what: str, driven: float, measured: float) -> None:
        ok = driven == measured
        checks.append({"what": what, "driven": int(driven), "measured": int(measured), "ok": ok})

    for entity in ENTITIES:
        push = {"sync.operation": "push", "sync.entity": entity}
        pull = {"sync.operation": "pull", "sync.entity": entity}
        p, q = tally.of("push", entity), tally.of("pull", entity)
        check(f"push requests ({entity})", p.requests, snap.total("sync.operation.duration", push))
        check(f"pull requests ({entity})", q.requests, snap.total("sync.operation.duration", pull))
        check(
            f"conflicts ({entity})",
            p.conflicts,
            snap.total("sync.conflicts", {"sync.entity": entity}),
        )
        check(
            f"pushes with conflicts ({entity})",
            p.conflicted,
            snap.total("sync.operation.duration", {**push, "sync.outcome": "conflict"}),
        )
        check(
            f"items created ({entity})",
            p.created,
            snap.total("sync.items", {**push, "sync.change": "created"}),
        )
        check(
            f"items updated ({entity})",
            p.updated,
            snap.total("sync.items", {**push, "sync.change": "updated"}),
        )
    all_counts = list(tally.counts.values())
    check(
        "idempotent retries = idempotency hits",
        tally.idempotent_retries,
        snap.total("sync.idempotency.hits"),
    )
    check(
        "5xx responses = error outcomes",
        sum(c.server_errors for c in all_counts),
        snap.total("sync.operation.duration", {"sync.outcome": "error"}),
    )
    check(
        f"{N_PLUS_ONE_ENTITY} pulls of >= 10 changes = N+1 detections",
        tally.of("pull", N_PLUS_ONE_ENTITY).n_plus_one,
        snap.total("sync.db.n_plus_one"),
    )
    check(
        "snapshot pulls = slow queries on snapshot_lock",
        sum(tally.of("pull", e).snapshots for e in ENTITIES),
        snap.total("sync.db.slow_queries", {"db.collection.name": "snapshot_lock"}),
    )
    box = outbox_stats(snap)
    applied = sum(tally.of("push", e).created + tally.of("push", e).updated for e in ENTITIES)
    check("changes applied = outbox messages enqueued", applied, box["enqueued"])
    rows = service.outbox_counts()
    check("outbox rows published = outbox published", rows.get("published", 0), box["published"])
    check("outbox rows pending = outbox depth", rows.get("pending", 0), box["depth"] or 0)
    check("transport errors", 0, tally.transport_errors)
    client_checks(snap, tally, check)
    return {
        "run": {
            "seconds": seconds,
            "duration": options.duration,
            "clients": options.clients,
            "seed": options.seed,
            "database": service.engine.dialect.name,
            "interrupted": stopped_by is not None,
            "signal": stopped_by,
        },
        "operations": ops,
        "totals": {
            "operations": int(snap.total("sync.operation.duration")),
            "conflicts": int(snap.total("sync.conflicts")),
            "idempotency_hits": int(snap.total("sync.idempotency.hits")),
            "errors": int(snap.total("sync.operation.duration", {"sync.outcome": "error"})),
            "n_plus_one": int(snap.total("sync.db.n_plus_one")),
            "slow_queries": int(snap.total("sync.db.slow_queries")),
            "plan_findings": int(snap.total("sync.db.plan.findings")),
            "series": snap.series_count(),
        },
        "plans": plan_findings(snap),
        "outbox": {**box, "rows": rows},
        "clients": client_stats(snap),
        "pool": pool_stats(snap),
        "overhead": overhead(snap),
        "alerts": alert_report(snap, seconds),
        "driven": tally.as_dict(),
        "checks": checks,
    }

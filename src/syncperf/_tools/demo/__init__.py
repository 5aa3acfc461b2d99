"""``syncperf demo``: a live instrumented sync service under simulated offline-first clients.

Starts the bundled FastAPI + SQLAlchemy sync service on loopback under uvicorn (a SQLite file
in a temporary directory, or ``--database-url``), instrumented with ``SyncPerfMiddleware``,
``syncperf.sqlalchemy`` and ``syncperf.outbox``; drives simulated clients against it over
HTTP; shows syncperf's numbers live; ends with a summary that checks them against the traffic
the simulator drove, and the default alerts that would have fired. Needs the ``demo`` extra.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from syncperf._config import MAX_SECONDS
from syncperf.cli import INTERRUPTED, TERMINATED, Parser, positive

__all__ = ["MAX_CLIENTS", "main"]

MAX_CLIENTS = 1_000
"""The most ``--clients``: the load ``benchmarks/bench_load.py`` measures. Every client is built
before the first request, so a count without a bound used up the memory before Ctrl-C or
``--duration`` could end the run; and 10,000 clients kept the one event loop that drives
them (and shows the progress) busy for minutes after a 3 s ``--duration``."""


def _endpoint(raw: str) -> str:
    """An OTLP base endpoint: ``http(s)://host[:port][/path]``, with no query or fragment
    (``/v1/<signal>`` is added to it; the exporters quote it on every failed export)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(
            "not an http(s) URL with a host and a valid port (e.g. http://localhost:4318)"
        )
    if "?" in raw or "#" in raw:
        raise argparse.ArgumentTypeError(
            "a base URL with a ?query or #fragment (/v1/<signal> is added to it; pass"
            " credentials in OTEL_EXPORTER_OTLP_HEADERS)"
        )
    return raw


def parser() -> argparse.ArgumentParser:
    """The ``syncperf demo`` argument parser."""
    p = Parser(
        prog="syncperf demo",
        description="Run a live instrumented sync service under simulated clients.",
    )
    p.add_argument(
        "--duration",
        type=positive(float, most=MAX_SECONDS),
        default=20.0,
        metavar="SECONDS",
        help="how long the clients run, at most a day (default: 20)",
    )
    p.add_argument(
        "--clients",
        type=positive(int, most=MAX_CLIENTS),
        default=20,
        metavar="N",
        help=f"simulated clients, at most {MAX_CLIENTS:,} (default: 20)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed of the simulation")
    p.add_argument(
        "--database-url",
        metavar="URL",
        help="SQLAlchemy URL, e.g. postgresql://user@host/db (default: a SQLite "
        "file in a temporary directory); the demo's tables are dropped and recreated",
    )
    p.add_argument(
        "--otlp",
        type=_endpoint,
        metavar="ENDPOINT",
        help="also export spans and metrics over OTLP to ENDPOINT "
        "(OTEL_EXPORTER_OTLP_PROTOCOL picks grpc or http/protobuf)",
    )
    p.add_argument(
        "--prometheus-port",
        type=int,
        metavar="PORT",
        help="also serve syncperf's metrics at http://127.0.0.1:PORT/metrics",
    )
    p.add_argument(
        "--no-tui",
        dest="tui",
        action="store_false",
        help="plain progress lines instead of the live view",
    )
    p.add_argument(
        "--json", dest="json_path", metavar="PATH", help="write the summary as JSON to PATH"
    )
    return p


def _unusable(database_url: str | None, json_path: str | None) -> str | None:
    """Why ``--database-url`` or ``--json`` cannot be used, checked before the run rather
    than after it (a summary path that cannot be written), or None."""
    try:
        (database_url or "").encode("utf-8")
    except UnicodeEncodeError:  # argument bytes that were not UTF-8 become lone surrogates
        return "--database-url holds bytes that are not UTF-8"
    if json_path is None:
        return None
    existed = os.path.lexists(json_path)
    try:
        with open(json_path, "a", encoding="utf-8"):
            pass
        if not existed:
            os.remove(json_path)
    except OSError as exc:
        return f"--json: cannot write {json_path!r}: {exc.strerror or exc}"
    return None


def _otlp_exporters() -> list[str]:
    """The exporter modules ``setup_otlp`` loads for the protocol of each signal
    (``OTEL_EXPORTER_OTLP_{TRACES,METRICS}_PROTOCOL``, else ``OTEL_EXPORTER_OTLP_PROTOCOL``,
    else ``http/protobuf``); a value it does not take is left to it to report."""
    modules = []
    for signal, kind in (("TRACES", "trace"), ("METRICS", "metric")):
        raw = os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL", "").strip()
        protocol = (raw or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")).strip().lower()
        package = {"": "http", "http/protobuf": "http", "grpc": "grpc"}.get(protocol)
        if package is not None:
            modules.append(f"opentelemetry.exporter.otlp.proto.{package}.{kind}_exporter")
    return modules


def _missing_extra(otlp: bool, prometheus: bool) -> str | None:
    """The extra ``--otlp`` or ``--prometheus-port`` needs and lacks, as one line, or None."""
    needs = [("--otlp", "otlp", module) for module in (_otlp_exporters() if otlp else [])]
    if prometheus:
        needs.append(("--prometheus-port", "prometheus", "prometheus_client"))
    from syncperf._metrics.resources import import_quietly

    for option, extra, module in needs:
        try:
            import_quietly(module)  # the gRPC exporter's import reads the resource variables
        except ImportError as error:
            return (
                f"{option} needs the {extra} extra ({error.name or module} is missing): "
                f"pip install 'syncperf[{extra}]'"
            )
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``syncperf demo``; returns the exit status.

    Args:
        argv: Arguments after ``demo`` (default: ``sys.argv[2:]``).

    Returns:
        0 when the run completed and syncperf's numbers matched the simulated traffic,
        1 on a mismatch, 2 on a usage error or a missing extra, 130 when interrupted
        (Ctrl-C), 143 when terminated (SIGTERM).
    """
    args = parser().parse_args(sys.argv[2:] if argv is None else list(argv))
    if args.prometheus_port is not None and not 0 <= args.prometheus_port <= 65535:
        print("syncperf demo: --prometheus-port must be between 0 and 65535", file=sys.stderr)
        return 2
    problem = _unusable(args.database_url, args.json_path)
    if problem:
        print(f"syncperf demo: {problem}", file=sys.stderr)
        return 2
    try:
        import fastapi  # noqa: F401
        import httpx  # noqa: F401
        import rich  # noqa: F401
        import sqlalchemy  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as error:
        print(
            f"syncperf demo needs the demo extra ({error.name} is missing): "
            "pip install 'syncperf[demo]'",
            file=sys.stderr,
        )
        return 2
    problem = _missing_extra(args.otlp is not None, args.prometheus_port is not None)
    if problem:
        print(f"syncperf demo: {problem}", file=sys.stderr)
        return 2
    from syncperf._tools._console import PipeConsole
    from syncperf._tools.demo._run import Options, run
    from syncperf.exceptions import ConfigError

    console = PipeConsole()  # a closed stdout: exit status 141, never 1 ("a check failed")
    if not console.is_terminal:  # piped or captured: wide enough for the tables
        console = PipeConsole(width=max(console.width, 150))

    try:
        summary = run(
            Options(
                duration=args.duration,
                clients=args.clients,
                seed=args.seed,
                database_url=args.database_url,
                otlp=args.otlp,
                prometheus_port=args.prometheus_port,
                tui=args.tui,
                json_path=args.json_path,
            ),
            console,
        )
    except ConfigError as exc:  # a busy --prometheus-port, a rejected OTLP setting or database
        print(f"syncperf demo: {exc}", file=sys.stderr)
        return 2
    if summary["run"]["interrupted"]:
        return TERMINATED if summary["run"]["signal"] == "SIGTERM" else INTERRUPTED
    return 0 if all(check["ok"] for check in summary["checks"]) else 1

"""What the demo shows: the rich live view, the plain progress lines, the final summary."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from collections.abc import Iterator
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from syncperf._tools.demo._stats import (
    Snapshot,
    client_stats,
    fmt_seconds,
    operation_stats,
    operations,
    outbox_stats,
    overhead,
    pool_stats,
)


def _num(value: float | None, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


def _pct(value: float) -> str:
    return f"{value:.1%}"


def operations_table(
    snap: Snapshot, previous: Snapshot | None, title: str, seconds: float | None = None
) -> Table:
    """One row per operation and entity (throughput since ``previous``, else over ``seconds``)."""
    table = Table(title=title, title_justify="left", expand=False)
    for column in ("operation", "entity"):
        table.add_column(column)
    for column in (
        "ops",
        "ops/s",
        "p50",
        "p95",
        "p99",
        "errors",
        "conflicts",
        "idem. hits",
        "queries/sync",
        "N+1",
    ):
        table.add_column(column, justify="right")
    for operation, entity in operations(snap):
        s = operation_stats(snap, operation, entity, previous, seconds)
        conflicts = f"{s['conflicts']} ({_pct(s['conflict_rate'])})" if operation == "push" else "-"
        table.add_row(
            operation,
            entity,
            str(s["count"]),
            _num(s["throughput"], ".1f"),
            fmt_seconds(s["p50"]),
            fmt_seconds(s["p95"]),
            fmt_seconds(s["p99"]),
            f"{s['errors']} ({_pct(s['error_rate'])})",
            conflicts,
            str(s["idempotency_hits"]),
            _num(s["queries_per_sync"], ".1f"),
            Text(str(s["n_plus_one"]), style="bold yellow" if s["n_plus_one"] else ""),
        )
    return table


def side_table(snap: Snapshot) -> Table:
    """Outbox, pool, slow queries and syncperf's own overhead."""
    table = Table(show_header=False, expand=False, title="service", title_justify="left")
    table.add_column("what")
    table.add_column("value", justify="right")
    box = outbox_stats(snap)
    table.add_row("outbox depth", _num(box["depth"]))
    table.add_row("outbox oldest age", fmt_seconds(box["oldest_age"]))
    table.add_row("outbox enqueued / published", f"{box['enqueued']} / {box['published']}")
    table.add_row("outbox failed (retried)", f"{box['failed']} ({box['retried']})")
    table.add_row("outbox lag p95", fmt_seconds(box["lag_p95"]))
    pool = pool_stats(snap)
    table.add_row("pool used / max", f"{_num(pool['used'])} / {_num(pool['max'])}")
    table.add_row("pool wait p99", fmt_seconds(pool["wait_p99"]))
    table.add_row("slow queries", f"{snap.total('sync.db.slow_queries'):.0f}")
    table.add_row("query plan findings", f"{snap.total('sync.db.plan.findings'):.0f}")
    clients = client_stats(snap)
    table.add_row(
        "client staleness p50 / p95",
        f"{fmt_seconds(clients['staleness_p50'])} / {fmt_seconds(clients['staleness_p95'])}",
    )
    table.add_row("client pending changes p95", _num(clients["pending_p95"], ".0f"))
    ratio = clients["client_error_ratio"]
    table.add_row("client-side failure rate", "-" if ratio is None else f"{ratio:.0%}")
    for component, o in sorted(overhead(snap).items()):
        table.add_row(
            f"syncperf overhead ({component})",
            f"{_num(o['mean_us'], '.1f')} µs mean, {_num(o['p99_us'], '.0f')} µs p99",
        )
    return table


class Warnings(logging.Handler):
    """Keeps syncperf's warnings (N+1, slow queries, ...) for the view instead of stderr."""

    def __init__(self, keep: int = 5) -> None:
        super().__init__(logging.WARNING)
        self.recent: deque[str] = deque(maxlen=keep)
        self.total = 0
        self.unseen: list[str] = []
        self._lock_unseen = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        """Keep one record."""
        try:
            message = record.getMessage()
        except Exception:  # a malformed record must not break the demo
            return
        if len(message) > 160:
            message = message[:157] + "..."
        with self._lock_unseen:
            self.total += 1
            self.recent.append(message)
            if len(self.unseen) < 100:
                self.unseen.append(message)

    def take(self) -> list[str]:
        """Messages not taken before."""
        with self._lock_unseen:
            taken, self.unseen = self.unseen, []
        return taken

    @contextlib.contextmanager
    def installed(self) -> Iterator[Warnings]:
        """Route the ``syncperf`` logger's records here for the block (not to stderr)."""
        logger = logging.getLogger("syncperf")
        propagate = logger.propagate
        logger.addHandler(self)
        logger.propagate = False
        try:
            yield self
        finally:
            logger.removeHandler(self)
            logger.propagate = propagate


def live_view(
    snap: Snapshot,
    previous: Snapshot | None,
    elapsed: float,
    duration: float,
    warnings: Warnings | None = None,
) -> Group:
    """The whole live screen."""
    head = Text.assemble(
        ("syncperf demo", "bold"),
        f"  {elapsed:5.1f} / {duration:.0f} s   (Ctrl-C stops and prints the summary)",
    )
    parts: list[RenderableType] = [
        head,
        operations_table(snap, previous, "sync operations"),
        side_table(snap),
    ]
    if warnings is not None and warnings.recent:
        parts.append(Text(f"syncperf warnings ({warnings.total}), latest:", style="bold yellow"))
        parts.extend(
            Text("  " + line, style="yellow", overflow="ellipsis", no_wrap=True)
            for line in warnings.recent
        )
    return Group(*parts)


def plain_line(snap: Snapshot, previous: Snapshot | None, elapsed: float) -> str:
    """One progress line for ``--no-tui``."""
    parts = [f"[{elapsed:5.1f}s]"]
    for operation in ("pull", "push"):
        duration = snap.merged("sync.operation.duration", {"sync.operation": operation})
        count = duration.count if duration else 0
        rate = ""
        if previous is not None and snap.at > previous.at:
            before = previous.total("sync.operation.duration", {"sync.operation": operation})
            rate = f" {(count - before) / (snap.at - previous.at):.1f}/s"
        parts.append(f"{operation} {count}{rate}")
    parts.append(f"conflicts {snap.total('sync.conflicts'):.0f}")
    parts.append(f"idempotency hits {snap.total('sync.idempotency.hits'):.0f}")
    parts.append(f"N+1 {snap.total('sync.db.n_plus_one'):.0f}")
    box = outbox_stats(snap)
    parts.append(f"outbox depth {_num(box['depth'])}")
    return "  ".join(parts)


def _plan_line(plans: list[dict[str, Any]]) -> str:
    return ", ".join(
        f"{p['finding']} on {p['table']} ({p['operation']} {p['entity']})" for p in plans
    )


def print_summary(console: Console, summary: dict[str, Any], snap: Snapshot) -> None:
    """The final summary: tables, checks against the simulator, alerts."""
    run = summary["run"]
    state = "interrupted" if run["interrupted"] else "completed"
    console.print(
        f"\n[bold]syncperf demo {state}[/bold]: {run['seconds']:.1f} s, {run['clients']} "
        f"clients, {run['database']}"
    )
    console.print(operations_table(snap, None, "sync operations (whole run)", run["seconds"]))
    console.print(side_table(snap))
    checks = Table(title="syncperf vs the traffic the simulator drove", title_justify="left")
    for column in ("check", "simulator", "syncperf", ""):
        checks.add_column(column, justify="right" if column else "left")
    for check in summary["checks"]:
        mark = Text("ok", style="green") if check["ok"] else Text("MISMATCH", style="bold red")
        checks.add_row(check["what"], str(check["driven"]), str(check["measured"]), mark)
    console.print(checks)
    if summary["plans"]:
        plans = Table(title="query plans of sync statements", title_justify="left")
        for column in ("finding", "table", "sync operation", "count"):
            plans.add_column(column, justify="right" if column == "count" else "left")
        for found in summary["plans"]:
            where = f"{found['operation']} {found['entity']}"
            plans.add_row(found["finding"], found["table"], where, str(found["count"]))
        console.print(plans)
        console.print(f"query plans: {_plan_line(summary['plans'])} (docs/plans.md)")
    alerts = Table(title="default alerts on these numbers", title_justify="left")
    for column in ("alert", "severity", "would fire", "why"):
        alerts.add_column(column)
    for alert in summary["alerts"]:
        fired = alert["fired"]
        if fired is None:
            verdict = Text("n/a", style="dim")
        else:
            verdict = Text("FIRES", style="bold red") if fired else Text("no", style="green")
        alerts.add_row(alert["alert"], alert["severity"], verdict, "; ".join(alert["details"]))
    console.print(alerts)

"""Thresholds and windows of the generated rules, monitors and dashboard."""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
from dataclasses import dataclass
from urllib.parse import unquote_plus, urlsplit

from syncperf._metrics.catalogue import PENDING_BOUNDS
from syncperf.cli import without_secrets
from syncperf.exceptions import ConfigError

DEFAULT_RUNBOOK_URL = "https://github.com/syncperf/syncperf/blob/main/docs/runbooks.md"
_UNITS = ("y", "w", "d", "h", "m", "s", "ms")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_DURATION = re.compile("".join(f"(?:([0-9]{{1,12}}){unit})?" for unit in _UNITS))
"""Prometheus's grammar (prometheus/common model.ParseDuration): each unit at most once, in
that order; 12 digits at most so ``int()`` stays cheap."""
MAX_DURATION_SECONDS = _UNIT_SECONDS["y"]
"""The longest duration an option takes: ``1y``."""


def parse_duration(option: str, value: object) -> float:
    """Seconds in a Prometheus duration such as ``30s``, ``5m`` or ``1h30m``, at most ``1y``.

    Raises:
        ConfigError: ``value`` is not a duration Prometheus accepts, or is longer than 1y.
    """
    match = _DURATION.fullmatch(value) if isinstance(value, str) and value else None
    if match is not None:
        seconds = sum(
            int(n) * _UNIT_SECONDS[unit]
            for n, unit in zip(match.groups(), _UNITS, strict=True)
            if n
        )
        if seconds <= MAX_DURATION_SECONDS:
            return seconds
    raise ConfigError(
        option,
        value,
        "a Prometheus duration such as 30s, 5m or 1h30m (units y w d h m s ms, each at most "
        "once and in that order), at most 1y",
    )


def format_duration(seconds: float) -> str:
    """The shortest Prometheus duration for a whole number of seconds (``0s`` for zero)."""
    total = round(seconds)
    if total <= 0:
        return "0s"
    parts = []
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if total >= size:
            count, total = divmod(total, size)
            parts.append(f"{count}{unit}")
    return "".join(parts)


def number(value: float) -> str:
    """A threshold as people write it (``5``, ``0.1``)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def percent(value: float) -> str:
    """A ratio as a percentage (``0.1`` -> ``10%``)."""
    return f"{value * 100:g}%"


@dataclass(frozen=True)
class RuleOptions:
    """Thresholds and windows of the alert rules (defaults match docs/runbooks.md).

    Attributes:
        conflict_rate: Share of pushes with outcome ``conflict``, per entity.
        p95_seconds: p95 sync duration, per operation and entity.
        error_rate: Share of sync operations with outcome ``error``.
        volume_spike_factor: Operation rate relative to its own baseline (above 1).
        idempotency_spike_factor: Idempotency-hit ratio relative to its own baseline
            (above 1).
        idempotency_min_ratio: Hit ratio below which no idempotency spike is reported.
        outbox_age_seconds: Age of the oldest unpublished outbox message.
        n_plus_one: N+1 detections tolerated per window (alert when above).
        slow_queries_per_hour: Slow queries per hour, per statement kind and table.
        stale_hours: Staleness that counts as "far behind" (a bucket boundary of
            ``sync.pull.staleness``: 1, 2, 4, 8, 24, 48, 168, 336 or 720 hours).
        stale_share: Share of pulls from clients that far behind (0.5, 0.25, 0.1, 0.05 or
            0.01: the complement of a quantile Datadog computes, for the twin monitor).
        pending_changes: p95 of the changes clients report waiting on their devices, below
            10000 (the top finite bucket of ``sync.client.pending_changes``).
        client_error_rate: Share of the syncs clients measured themselves that failed.
        min_rate: Operations per second below which ratio and spike alerts stay silent.
        window: Rate window of the recording rules and alerts.
        baseline_window: Length of the baseline the spike alerts compare against, at
            least ``window``.
        slow_query_window: Window of the slow-query rate.
        plan_window: Window in which a query plan finding keeps its alert firing (plans are
            read once per statement shape every 5 min by default: keep it above that).
        for_: Overrides every alert's ``for`` duration (None: per-alert defaults).
        evaluation_interval: Rule group ``interval`` (None: Prometheus's global one).
        runbook_url: Base URL of docs/runbooks.md; alerts link to ``URL#alertname``.
    """

    conflict_rate: float = 0.10
    p95_seconds: float = 5.0
    error_rate: float = 0.05
    volume_spike_factor: float = 3.0
    idempotency_spike_factor: float = 3.0
    idempotency_min_ratio: float = 0.05
    outbox_age_seconds: float = 300.0
    n_plus_one: float = 0.0
    slow_queries_per_hour: float = 100.0
    stale_hours: float = 24.0
    stale_share: float = 0.25
    pending_changes: float = 100.0
    client_error_rate: float = 0.20
    min_rate: float = 0.05
    window: str = "5m"
    baseline_window: str = "1h"
    slow_query_window: str = "1h"
    plan_window: str = "30m"
    for_: str | None = None
    evaluation_interval: str | None = None
    runbook_url: str = DEFAULT_RUNBOOK_URL

    def __post_init__(self) -> None:
        _ratio("conflict_rate", self.conflict_rate)
        _ratio("error_rate", self.error_rate)
        _ratio("idempotency_min_ratio", self.idempotency_min_ratio, high=0.9)
        _positive("p95_seconds", self.p95_seconds, low=0.001, high=30.0)
        _positive("volume_spike_factor", self.volume_spike_factor, low=1.0, above=True)
        _positive("idempotency_spike_factor", self.idempotency_spike_factor, low=1.0, above=True)
        _positive("outbox_age_seconds", self.outbox_age_seconds)
        _positive("slow_queries_per_hour", self.slow_queries_per_hour)
        _positive("min_rate", self.min_rate, low=0.0)
        _positive("n_plus_one", self.n_plus_one, low=0.0)
        _one_of("stale_hours", self.stale_hours, STALE_HOURS)
        _one_of("stale_share", self.stale_share, STALE_SHARES)
        # histogram_quantile() never goes past the top finite bucket: no p95 exceeds it
        _positive("pending_changes", self.pending_changes, high=float(PENDING_BOUNDS[-1]))
        _ratio("client_error_rate", self.client_error_rate)
        for name in ("window", "baseline_window", "slow_query_window", "plan_window"):
            if parse_duration(name, getattr(self, name)) < 1:
                raise ConfigError(name, getattr(self, name), "a duration of at least 1s")
        if self.seconds("baseline_window") < self.seconds("window"):  # noisier than the window
            accepted = f"a duration at least the window ({self.window})"
            raise ConfigError("baseline_window", self.baseline_window, accepted)
        if self.for_ is not None:
            parse_duration("for", self.for_)
        if self.evaluation_interval is not None:
            parse_duration("evaluation_interval", self.evaluation_interval)
        _runbook_url(self.runbook_url)

    def seconds(self, name: str) -> float:
        """A duration option in seconds."""
        return parse_duration(name, getattr(self, name))

    def for_duration(self, default: str) -> str:
        """An alert's ``for``: the override when given, else ``default``."""
        return self.for_ if self.for_ is not None else default

    def runbook(self, alert: str) -> str:
        """The runbook link of ``alert`` (its section in docs/runbooks.md)."""
        return f"{self.runbook_url}#{alert.lower()}"


STALE_HOURS = (1.0, 2.0, 4.0, 8.0, 24.0, 48.0, 168.0, 336.0, 720.0)
"""Staleness thresholds that are exact ``sync.pull.staleness`` bucket boundaries."""
STALE_SHARES = (0.5, 0.25, 0.1, 0.05, 0.01)
"""Shares whose complement is a quantile Datadog distributions offer (p50 ... p99)."""


def _one_of(name: str, value: object, accepted: tuple[float, ...]) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value not in accepted:
        raise ConfigError(name, value, "one of " + ", ".join(number(a) for a in accepted))


def _ratio(name: str, value: object, high: float = 1.0) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < high:
        raise ConfigError(name, value, f"a number between 0 and {number(high)} (exclusive)")


def _positive(
    name: str, value: object, low: float = 0.0, high: float = math.inf, above: bool = False
) -> None:
    # 0 itself is refused unless the option counts from it (one message for both bounds);
    # ``above``: ``low`` is refused too (a spike factor of 1 is any rise over the baseline)
    strict = above or (low == 0.0 and name not in ("min_rate", "n_plus_one"))
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and not math.isnan(float(value)):  # type: ignore[arg-type]
        number_ = float(value)  # type: ignore[arg-type]
        if (low < number_ if strict else low <= number_) and number_ < high:
            return
    bound = f" and below {number(high)}" if high != math.inf else ""
    lowest = "above" if strict else "of at least"
    raise ConfigError(name, value, f"a number {lowest} {number(low)}{bound}")


MAX_URL = 2000


def _runbook_url(value: object) -> None:
    """An http(s) URL of printable characters: it is written into YAML, JSON and a ``#``
    header line, where a newline or a lone surrogate breaks the file; and without
    ``user:password@``, which every alert would show. A refused value is shown without its
    credentials and query string."""
    ok = (
        isinstance(value, str)
        and len(value) <= MAX_URL
        and all(c.isprintable() and not c.isspace() for c in value)
    )
    if ok:
        try:
            parts = urlsplit(str(value))
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            ok = False
        else:
            ok = parts.scheme in ("http", "https") and bool(parts.hostname)
    shown = without_secrets(value) if isinstance(value, str) else value
    if isinstance(shown, str) and "#" in shown:  # a fragment may hold ``access_token=``
        shown = shown[: shown.index("#")] + "#***"
    if not ok:
        accepted = f"an http(s) URL with a host, at most {MAX_URL} printable characters"
        raise ConfigError("runbook_url", shown, accepted + ", no spaces")
    if "@" in parts.netloc:  # every alert's annotations show it to whoever sees the alert
        accepted = "a URL without user:password@ (alerts show it to everyone who sees them)"
        raise ConfigError("runbook_url", shown, accepted)
    if _secret_parameter(parts.query) or _secret_parameter(parts.fragment):
        accepted = "a URL without a secret query parameter such as token=, key= or sig="
        raise ConfigError("runbook_url", shown, accepted + " (alerts show it to everyone)")


_SECRET_WORDS = frozenset(
    {
        *("token", "key", "apikey", "password", "passwd", "pwd", "secret", "sig", "signature"),
        *("auth", "authorization", "credential", "credentials", "jwt", "bearer", "session"),
        *("sessionid", "sid"),
    }
)
"""Query parameter names (or words of one, split at ``_``, ``-``, ``.``) that carry a
credential: ``?token=``, ``access_token``, ``api_key``, ``X-Amz-Signature``."""
_SECRET_PARTS = ("token", "secret", "passw", "signature", "apikey", "credential")
"""Parts that mark a name as secret wherever they stand (``AccessToken``, ``clientSecret``)."""
_WORD_SPLIT = re.compile(r"[^a-z0-9]+")


def _secret_parameter(query: str) -> bool:
    """Whether a query string (or fragment) has a parameter whose name says it is a secret;
    names are compared percent-decoded and case-insensitively, pairs split at ``&`` and
    ``;``."""
    for pair in re.split("[&;]", query):
        name = unquote_plus(pair.partition("=")[0]).casefold()
        if any(part in name for part in _SECRET_PARTS) or any(
            word in _SECRET_WORDS for word in _WORD_SPLIT.split(name)
        ):
            return True
    return False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one ``--option`` per ``RuleOptions`` field to ``parser``."""
    defaults = RuleOptions()
    for field in dataclasses.fields(RuleOptions):
        flag = "--" + field.name.rstrip("_").replace("_", "-")
        default = getattr(defaults, field.name)
        kind = float if isinstance(default, float) else str
        parser.add_argument(
            flag,
            dest=field.name,
            type=kind,
            default=default,
            metavar=field.name.rstrip("_").upper(),
            help=f"default: {default if default is not None else 'per alert'}",
        )


def from_arguments(namespace: argparse.Namespace) -> RuleOptions:
    """Build ``RuleOptions`` from parsed arguments.

    Raises:
        ConfigError: an option has a value the rules cannot use.
    """
    values = {f.name: getattr(namespace, f.name) for f in dataclasses.fields(RuleOptions)}
    return RuleOptions(**values)

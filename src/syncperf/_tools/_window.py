"""Time windows and what Prometheus recorded in them, over its HTTP API.

A window ``START..END`` takes RFC 3339 times (``2026-12-01T10:00:00Z``), ``now``, or times
relative to now (``-2h``, ``now-90m``, ``-1h30m``). What happened in a window is read with
instant queries at its end: what each counter series counted in it (``counted``), summed by
the labels compare needs (``sync_operation``, ``sync_entity``, ``sync_outcome``, ``le``,
``outbox_name``).
"""

from __future__ import annotations

import base64
import http.client
import re
import string
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from syncperf._metrics import catalogue
from syncperf._tools._answer import decode, error_body, read_answer

DURATION = catalogue.SYNC_OPERATION_DURATION.prometheus
QUERIES = catalogue.SYNC_DB_QUERIES.prometheus
OUTBOX_LAG = catalogue.OUTBOX_LAG.prometheus
NO_ENTITY = "-"
MAX_ANSWER = 64 * 1024 * 1024
MAX_COUNT = float(2**53)
"""Counts above it are not exact in a float64: such samples (and +Inf, NaN, negative ones,
which ``increase()`` never yields, and JSON integers too big for a float) are dropped."""

_RELATIVE = re.compile(r"^(?:now)?(?:-((?:\d+[smhdw])+))?$")
_PART = re.compile(r"(\d+)([smhdw])")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_MAX_DIGITS = 12
_EARLIEST = 0.0
_LATEST = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc).timestamp()
_SELECTOR = re.compile(r'^\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(=|!=|=~|!~)\s*"')

Key = tuple[str, str]


class CompareError(Exception):
    """A usage or connection problem (its message is one line)."""


Origin = tuple[str, str, int]
"""Scheme, host, port: where credentials may go."""


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect unless it leaves http(s), goes from https to http, or takes the
    credentials of the URL to another origin; a refusal is a ``CompareError``.

    urllib's own handler sends every header, Authorization included, wherever the server
    points, and turns a redirected POST into a GET without its form. Here a 307 or 308
    repeats the POST; a 301, 302 or 303 becomes a GET with the form in the URL (what HTTP
    clients do, and Prometheus answers both).
    """

    http_error_308 = urllib.request.HTTPRedirectHandler.http_error_302  # as 3.11's (3.10: none)

    def __init__(self, shown: str, origin: Origin, credentials: bool) -> None:
        self.shown, self.origin, self.credentials = shown, origin, credentials

    def redirect_request(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> urllib.request.Request:
        target = urllib.parse.urlsplit(newurl)
        refused = _refused(req, target, self.origin, self.credentials)
        if refused:
            fp.close()
            raise CompareError(
                f"--prometheus: {self.shown} answered HTTP {code}, a redirect {refused}: "
                "give the URL it points to"
            )
        repeat = code in (307, 308) or req.data is None
        kept = {k: v for k, v in req.headers.items() if repeat or k.lower() != "content-type"}
        if repeat:
            return urllib.request.Request(newurl, req.data, kept, method=req.get_method())
        form = req.data.decode("ascii") if isinstance(req.data, bytes) else ""
        query = f"{target.query}&{form}" if target.query else form
        get = urllib.parse.urlunsplit(target._replace(query=query, fragment=""))
        return urllib.request.Request(get, headers=kept, method="GET")


def _refused(
    req: urllib.request.Request, target: urllib.parse.SplitResult, home: Origin, secret: bool
) -> str | None:
    """Why a redirect to ``target`` is not followed, or None."""
    origin = _origin(target)
    if origin is None or target.username is not None:
        return "to a URL that is not http(s)://host:port"
    if req.type == "https" and origin[0] == "http":
        return "from https to http"
    if secret and origin != home:
        shown = _printable(f"{target.scheme}://{target.netloc}")
        return f"to another server ({shown}), which the credentials are not for"
    return None


def _origin(parts: urllib.parse.SplitResult) -> Origin | None:
    """``parts``' scheme, host and port (the default one when none is written), or None when
    it is no http(s) URL with a host."""
    try:
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


@dataclass(frozen=True)
class Window:
    """``[start, end]`` in Unix seconds."""

    start: float
    end: float

    @property
    def seconds(self) -> int:
        """The window's length, whole seconds."""
        return max(round(self.end - self.start), 1)

    def describe(self) -> str:
        """``START..END`` in RFC 3339 (UTC)."""
        return f"{_rfc3339(self.start)}..{_rfc3339(self.end)}"


def parse_window(raw: str, option: str, now: float | None = None) -> Window:
    """A ``START..END`` window; a bad one raises ``CompareError`` naming ``option``."""
    now = time.time() if now is None else now
    start, sep, end = raw.partition("..")
    if not sep:
        raise CompareError(f"{option} {_shown(raw)}: expected START..END (RFC 3339, now, -2h)")
    window = Window(_parse_time(start, option, now), _parse_time(end, option, now))
    if window.end <= window.start:
        raise CompareError(f"{option} {_shown(raw)}: the end is not after the start")
    return window


def _parse_time(raw: str, option: str, now: float) -> float:
    text = raw.strip()
    match = _RELATIVE.match(text) if text else None
    if match:
        parts = _PART.findall(match.group(1) or "")
        if any(len(n) > _MAX_DIGITS for n, _ in parts):  # int() of 5000 digits raises
            raise CompareError(f"{option}: {_shown(raw)} is not between the years 1970 and 9999")
        seconds = now - sum(int(n) * _SECONDS[unit] for n, unit in parts)
    else:
        try:
            stamp = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise CompareError(
                f"{option}: {_shown(raw)} is not a time (RFC 3339, 'now', or relative like -2h)"
            ) from None
        if stamp.tzinfo is None:
            raise CompareError(f"{option}: {_shown(raw)} has no time zone (add Z or +00:00)")
        seconds = stamp.timestamp()
    if not _EARLIEST <= seconds <= _LATEST:  # outside them, datetime cannot show it
        raise CompareError(f"{option}: {_shown(raw)} is not between the years 1970 and 9999")
    return seconds


def _shown(raw: str) -> str:
    """``raw`` quoted for a one-line message, at most 63 characters (cut after quoting:
    ``repr`` writes an unprintable character in up to 10)."""
    text = repr(raw[:61])
    return text if len(text) <= 63 else text[:60] + "..."


def _rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_selector(selector: str | None) -> str:
    """The label matchers to add to every query (``job="api"``), braces excluded."""
    if not selector:
        return ""
    inner = selector.strip().removeprefix("{").removesuffix("}").strip()
    if not _SELECTOR.match(inner):
        raise CompareError(f'--selector {_shown(selector)}: expected label matchers like job="api"')
    try:
        inner.encode("utf-8")  # lone surrogates: argument bytes that were not UTF-8
    except UnicodeEncodeError:
        raise CompareError("--selector: holds bytes that are not UTF-8") from None
    return inner


@dataclass
class Histogram:
    """Bucket counts (per bucket, the last one +Inf) of one series in one window."""

    bounds: list[float] = field(default_factory=list)
    counts: list[float] = field(default_factory=list)

    @property
    def total(self) -> float:
        """Observations in the window."""
        return float(sum(self.counts))


@dataclass
class Recorded:
    """What one window holds, per (operation, entity) and per outbox."""

    window: Window
    durations: dict[Key, Histogram] = field(default_factory=dict)
    outcomes: dict[Key, dict[str, float]] = field(default_factory=dict)
    queries: dict[Key, Histogram] = field(default_factory=dict)
    query_sums: dict[Key, float] = field(default_factory=dict)
    outbox_lag: dict[str, Histogram] = field(default_factory=dict)


class Prometheus:
    """Instant queries against a Prometheus server's HTTP API."""

    def __init__(self, url: str, selector: str = "", timeout: float = 30.0) -> None:
        usage = "--prometheus: expected http(s)://host:port"
        if any(c.isspace() or not c.isprintable() for c in url):  # urlsplit drops \t and \n
            raise CompareError(usage + " (no spaces or control characters)")
        if "#" in url:  # a fragment is never sent: a '#' in a password or token cut it short
            raise CompareError(usage + " (a '#' ends the URL: write a '#' in it as %23)")
        try:
            parsed = urllib.parse.urlsplit(url)
            host, port = parsed.hostname, parsed.port
        except ValueError:
            raise CompareError(usage) from None
        origin = _origin(parsed)
        if origin is None or host is None:
            raise CompareError(usage)
        netloc = host if port is None else f"{host}:{port}"
        if ":" in host:
            netloc = f"[{host}]" if port is None else f"[{host}]:{port}"
        path = urllib.parse.quote(parsed.path, safe=string.punctuation)  # non-ASCII: UTF-8
        self.url = urllib.parse.urlunsplit((parsed.scheme, netloc, path, "", "")).rstrip("/")
        """The base URL without credentials or query string: safe to print."""
        query = urllib.parse.quote(parsed.query, safe=string.punctuation)
        self._endpoint = self.url + "/api/v1/query" + (f"?{query}" if query else "")
        """Where queries go: the query string too (a proxy's token), never printed."""
        self._headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if parsed.username is not None:  # http://user:password@host: basic authentication
            user = urllib.parse.unquote(parsed.username)
            password = urllib.parse.unquote(parsed.password or "")
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"
        self.selector = selector
        self.timeout = timeout
        redirects = _Redirects(self.url, origin, "Authorization" in self._headers)
        self._opener = urllib.request.build_opener(redirects)

    def query(self, promql: str, at: float) -> list[dict[str, Any]]:
        """The result vector of ``promql`` evaluated at ``at``."""
        body = urllib.parse.urlencode({"query": promql, "time": f"{at:.3f}"}).encode()
        request = urllib.request.Request(self._endpoint, data=body, headers=self._headers)
        deadline = time.monotonic() + self.timeout
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                raw = read_answer(response, MAX_ANSWER + 1, deadline)
            if len(raw) > MAX_ANSWER:
                raise CompareError(
                    f"Prometheus at {self.url} answered more than {MAX_ANSWER} bytes"
                )
            answer = decode(raw)
        except urllib.error.HTTPError as exc:
            if 300 <= exc.code < 400:  # no Location, or a loop (urllib stops at 10)
                raise CompareError(
                    f"--prometheus: {self.url} answered HTTP {exc.code}, a redirect that "
                    "leads nowhere or in a loop"
                ) from None
            answer = error_body(exc, deadline)
            if not isinstance(answer, dict) or answer.get("status") != "error":  # a proxy's
                raise CompareError(f"Prometheus at {self.url} answered HTTP {exc.code}") from None
        except (OSError, ValueError, http.client.HTTPException) as exc:
            reason = _printable(str(getattr(exc, "reason", exc)).strip())
            raise CompareError(f"cannot query Prometheus at {self.url}: {reason}") from None
        return self._result(answer)

    def _result(self, answer: Any) -> list[dict[str, Any]]:
        """The result list of a decoded answer; anything else is a ``CompareError``."""
        unexpected = CompareError(f"Prometheus at {self.url} gave an unexpected answer")
        if not isinstance(answer, dict):
            raise unexpected
        if answer.get("status") != "success":
            error = answer.get("error")
            lines = error.splitlines() if isinstance(error, str) else []
            if not lines or not lines[0].strip():
                raise unexpected
            raise CompareError(f"Prometheus rejected a query: {_printable(lines[0])}")
        data = answer.get("data")
        result = data.get("result") if isinstance(data, dict) else None
        if not isinstance(result, list):
            raise unexpected
        return result

    def increase(self, metric: str, by: str, window: Window) -> list[tuple[dict[str, str], float]]:
        """What the counter ``metric`` counted in ``window``, summed by ``by`` (``counted``)."""
        promql = counted(f"{metric}{{{self.selector}}}", by, window.seconds, window.end)
        samples = []
        for sample in self.query(promql, window.end):
            try:
                labels = {str(k): str(v) for k, v in dict(sample["metric"]).items()}
                value = float(sample["value"][1])
            except (KeyError, IndexError, TypeError, ValueError, OverflowError, RecursionError):
                continue  # not a sample; an int too big for a float; str() of deep nesting
            if 0.0 <= value <= MAX_COUNT:  # NaN when the window holds no samples; never +-Inf
                samples.append((labels, value))
        return samples

    def recorded(self, window: Window) -> Recorded:
        """Everything compare needs from ``window``."""
        found = Recorded(window)
        op = "sync_operation, sync_entity"
        for labels, value in self.increase(DURATION + "_count", op + ", sync_outcome", window):
            outcome = labels.get("sync_outcome", "success")
            found.outcomes.setdefault(_key(labels), {})[outcome] = value
        found.durations = _histograms(self.increase(DURATION + "_bucket", op + ", le", window))
        found.queries = _histograms(self.increase(QUERIES + "_bucket", op + ", le", window))
        for labels, value in self.increase(QUERIES + "_sum", op, window):
            found.query_sums[_key(labels)] = value
        lag = self.increase(OUTBOX_LAG + "_bucket", "outbox_name, le", window)
        found.outbox_lag = {
            name[0]: histogram for name, histogram in _histograms(lag, ("outbox_name",)).items()
        }
        return found


def counted(series: str, by: str, seconds: int, end: float) -> str:
    """PromQL for what the counters ``series`` counted in the ``seconds`` up to ``end``,
    summed by ``by``: per series, its last sample in the window less its last sample before
    it (0 for a series born in the window: all it counts is new), exactly what the scrapes
    in the window saw, and a series that ended in the window keeps what it counted there.
    ``increase()`` would lose a new series' first sample (it has no 0 before it: a series
    appears at its first count) and extrapolates the rest to the window's edges. A series
    whose counter went back (a reset, up to one window before the window) is read with
    ``increase()``, Prometheus's estimate, which counts what the restarted process counted
    but drops what came between the last scrape before the reset and the reset."""
    start = f"{end - seconds:.3f}"
    at, window, before = f"@ {end:.3f}", f"{seconds}s", f"{2 * seconds}s"
    last = f"last_over_time({series}[{window}] {at})"
    base = f"(last_over_time({series}[{window}] @ {start}) or {last} * 0)"
    exact = f"(({last} - {base}) >= 0) unless (resets({series}[{before}] {at}) > 0)"
    return f"sum by ({by}) ({exact} or increase({series}[{window}] {at}))"


def _printable(text: str) -> str:
    """``text`` from the server fit for a one-line message: control characters become ``?``,
    at most 200."""
    return "".join(c if c.isprintable() else "?" for c in text[:200])


def _key(labels: dict[str, str]) -> Key:
    return _label(labels, "sync_operation"), _label(labels, "sync_entity")


def _label(labels: dict[str, str], name: str) -> str:
    """A label value fit for a terminal: control characters become ``?``, at most 128."""
    value = labels.get(name) or NO_ENTITY
    return "".join(c if c.isprintable() else "?" for c in value[:128])


def _histograms(
    samples: list[tuple[dict[str, str], float]],
    names: tuple[str, ...] = ("sync_operation", "sync_entity"),
) -> dict[Any, Histogram]:
    """Cumulative ``le`` buckets per series, turned into per-bucket counts (the samples of
    one bound, whatever its ``le`` text, added)."""
    cumulative: dict[Any, dict[float, float]] = {}
    for labels, value in samples:
        try:
            le = float(labels.get("le", "nan"))
        except ValueError:
            continue
        if le != le:
            continue
        key = tuple(_label(labels, name) for name in names)
        buckets = cumulative.setdefault(key, {})
        # one bound, two texts: a scrape writes le="2.0", an OTLP path le="2" (metrics.md),
        # and `sum by (le)` keeps them apart; each counts its own series' observations
        buckets[le] = buckets.get(le, 0.0) + value
    histograms: dict[Any, Histogram] = {}
    for key, buckets in cumulative.items():
        bounds = sorted(buckets)
        if not bounds or bounds[-1] != float("inf"):
            continue
        counts, previous = [], 0.0
        for le in bounds:
            running = max(buckets[le], previous)  # increase() extrapolates bucket by bucket
            counts.append(float(round(running - previous)))
            previous = running
        histograms[key] = Histogram(bounds[:-1], counts)
    return histograms

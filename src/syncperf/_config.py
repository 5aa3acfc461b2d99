"""The frozen configuration and ``configure()``.

Environment variables are read in one place, ``Config.from_env``, and only when
``configure()`` runs (or on first use without it), never at import. syncperf's own
variables start with ``SYNCPERF_`` and never shadow an ``OTEL_*`` one; the standard
``OTEL_SDK_DISABLED`` and ``OTEL_METRIC_EXPORT_INTERVAL`` / ``_TIMEOUT`` are honoured.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from syncperf import _gate as gate
from syncperf import _otel_env as otel_env
from syncperf._config_env import SYNCPERF_VARS, check_names, check_operations
from syncperf.exceptions import ConfigError

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import MetricExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.trace import TracerProvider

__all__ = ["Config"]

SYNC_LOG_LEVELS: Mapping[str, int] = MappingProxyType(
    {"success": 10, "start": 20, "conflict": 20, "slow": 30, "error": 30}
)
"""Default level of each kind of sync log record (DEBUG, INFO, INFO, WARNING, WARNING)."""
_LEVEL_NAMES = {"CRITICAL": 50, "ERROR": 40, "WARNING": 30, "WARN": 30, "INFO": 20, "DEBUG": 10}
MAX_SECONDS = 86400.0
"""The longest duration option (one day): the runtime turns durations into nanoseconds and
waits on them, which a larger or infinite number would make fail on every request."""
MAX_TTL = 30 * MAX_SECONDS
"""The longest time-to-live or interval option (30 days), bounded for the same reason."""


@dataclass(frozen=True)
class Config:
    """Every syncperf setting. Build one with ``Config.from_env(...)`` or ``configure(...)``.

    Durations are in seconds, at most ``MAX_SECONDS`` (one day).

    Attributes:
        enabled: Master switch. ``OTEL_SDK_DISABLED=true`` turns it off.
        strict: Raise ``MeasurementError`` on request-time misuse instead of dropping it
            (on inside ``syncperf.testing.capture()``).
        max_entities: How many distinct ``sync.entity`` values are kept before the rest
            are reported as ``_other``.
        entities: An allowlist of entity names; when given, any other name is ``_other``.
        trace_sample_rate: syncperf's own head-sampling rate for sync spans, applied before
            the tracer provider's sampler. Metrics are never sampled.
        slow_threshold: Seconds; an operation slower than this is traced even when sampled out.
        overhead_budget: Seconds of syncperf's own time one operation may cost before
            syncperf sheds span work for ``shed_cooldown`` seconds (metrics continue).
        shed_cooldown: Seconds without spans after the budget was exceeded.
        max_series: Series limit per metric; beyond it measurements go to the
            ``otel.metric.overflow=true`` series.
        tracer_provider: Tracer provider for sync spans (default: the global one).
        resource: Resource of exported metrics (default: the tracer provider's resource,
            else ``Resource.create()`` which honours ``OTEL_SERVICE_NAME`` and
            ``OTEL_RESOURCE_ATTRIBUTES``).
        metric_exporters: OpenTelemetry ``MetricExporter`` objects fed every
            ``export_interval`` seconds from syncperf's aggregates.
        export_interval: Seconds between exports (``OTEL_METRIC_EXPORT_INTERVAL``, ms).
        export_timeout: Seconds one export may take (``OTEL_METRIC_EXPORT_TIMEOUT``, ms).
        prometheus: Register syncperf's collector with ``prometheus_client``: ``True`` for
            the default registry, or a ``CollectorRegistry`` (in multiprocess mode, a
            registry of its own: the default one is refused with ``ConfigError``).
        shutdown_timeout: Seconds a flush may hold its caller: ``force_flush()``, the ASGI
            lifespan shutdown and the interpreter's exit (``SYNCPERF_SHUTDOWN_TIMEOUT``).
            Keep it well below the platform's grace period (Kubernetes: 30 s).
        span_queue_size: Spans waiting to be ended by syncperf's finisher thread; past it
            they are dropped and counted (``OTEL_BSP_MAX_QUEUE_SIZE``, as the SDK's batch
            processor behind it; default 2048, the SDK's).
        excluded_urls: Comma-separated regular expressions; an HTTP request whose URL
            matches one is not recorded by ``SyncPerfMiddleware`` (unless it has its own
            ``excluded_urls=``). From ``OTEL_PYTHON_FASTAPI_EXCLUDED_URLS``, else
            ``OTEL_PYTHON_EXCLUDED_URLS``, as the contrib instrumentations read them.
        record_exception_messages: Export exception messages and full tracebacks on the
            spans' ``exception`` events as the OpenTelemetry SDK does, data included. Off by
            default: only the type, safe database details and the frames (docs/security.md).
        sync_log_levels: Level of each kind of record on the ``syncperf.sync`` logger:
            ``success``, ``conflict``, ``error``, ``slow`` (an operation slower than
            ``slow_threshold``) and ``start``; names or numbers, merged over
            ``SYNC_LOG_LEVELS`` (docs/logging.md).
        sync_log_sample_rate: Share of ordinary operations (successful and not slow) logged.
            Errors, conflicts and slow operations are always logged, up to
            ``sync_log_rate_limit``.
        sync_log_rate_limit: Records per second for errors, conflicts, slow operations and
            starts (a token bucket holding one second's worth); the excess is dropped and
            counted (``syncperf.dropped``, reason ``sync_log_limited``).
        sync_log_starts: Operations (e.g. a long initial pull) that also log a record when
            they start; their end is then always logged. Operation names as
            ``instrument_sync`` takes them (``[a-z][a-z0-9_]{0,31}``).
        plans: Read the query plans of sync statements on engines instrumented without an
            explicit ``plans=`` (``SYNCPERF_PLANS``; docs/plans.md).
    """

    enabled: bool = True
    strict: bool = False
    max_entities: int = 100
    entities: frozenset[str] | None = None
    trace_sample_rate: float = 1.0
    slow_threshold: float = 2.0
    overhead_budget: float = 0.05
    shed_cooldown: float = 30.0
    max_series: int = 2000
    tracer_provider: TracerProvider | None = field(default=None, compare=False)
    resource: Resource | None = field(default=None, compare=False)
    metric_exporters: tuple[MetricExporter, ...] = field(default=(), compare=False)
    export_interval: float = 60.0
    export_timeout: float = 30.0
    prometheus: Any = field(default=False, compare=False)
    shutdown_timeout: float = 5.0
    span_queue_size: int = 2048
    excluded_urls: str | None = None
    record_exception_messages: bool = False
    sync_log_levels: Mapping[str, int] = field(default_factory=lambda: SYNC_LOG_LEVELS, hash=False)
    sync_log_sample_rate: float = 1.0
    sync_log_rate_limit: float = 10.0
    sync_log_starts: frozenset[str] = frozenset()
    plans: bool = False

    def __post_init__(self) -> None:
        check_bool("enabled", self.enabled)
        check_bool("strict", self.strict)
        check_bool("record_exception_messages", self.record_exception_messages)
        check_bool("plans", self.plans)
        # Numbers are kept as plain int and float: a subclass's operators would run on the
        # request path (a raising __lt__ or __add__ in every handler).
        for name, minimum in (("max_entities", 1), ("max_series", 2), ("span_queue_size", 1)):
            object.__setattr__(self, name, check_int(name, getattr(self, name), minimum=minimum))
        if self.entities is not None:
            object.__setattr__(self, "entities", check_names("entities", self.entities))
        for name, low, high, open_low in _FLOAT_OPTIONS:
            number = check_float(name, getattr(self, name), low=low, high=high, open_low=open_low)
            object.__setattr__(self, name, number)
        object.__setattr__(
            self, "sync_log_levels", check_levels("sync_log_levels", self.sync_log_levels)
        )
        object.__setattr__(
            self, "sync_log_starts", check_operations("sync_log_starts", self.sync_log_starts)
        )
        if self.excluded_urls is not None:
            object.__setattr__(
                self, "excluded_urls", check_patterns("excluded_urls", self.excluded_urls)
            )
        exporters = self.metric_exporters
        if not isinstance(exporters, (tuple, list)):
            raise ConfigError("metric_exporters", exporters, "a sequence of MetricExporter")
        object.__setattr__(self, "metric_exporters", tuple(exporters))
        check_objects(self)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, lenient: bool = False, **overrides: Any
    ) -> Config:
        """Build a config from the environment, then apply ``overrides``.

        Reads ``OTEL_SDK_DISABLED``, ``OTEL_METRIC_EXPORT_INTERVAL``,
        ``OTEL_METRIC_EXPORT_TIMEOUT``, ``OTEL_BSP_MAX_QUEUE_SIZE``,
        ``OTEL_PYTHON_FASTAPI_EXCLUDED_URLS`` / ``OTEL_PYTHON_EXCLUDED_URLS`` and the
        ``SYNCPERF_*`` variables: ``SYNCPERF_STRICT``,
        ``SYNCPERF_MAX_ENTITIES``, ``SYNCPERF_ENTITIES`` (comma-separated),
        ``SYNCPERF_TRACE_SAMPLE_RATE``, ``SYNCPERF_SLOW_THRESHOLD``,
        ``SYNCPERF_OVERHEAD_BUDGET``, ``SYNCPERF_SHED_COOLDOWN``, ``SYNCPERF_MAX_SERIES``,
        ``SYNCPERF_SHUTDOWN_TIMEOUT``, ``SYNCPERF_RECORD_EXCEPTION_MESSAGES``,
        ``SYNCPERF_SYNC_LOG_LEVELS`` (e.g. ``success=INFO,error=ERROR``),
        ``SYNCPERF_SYNC_LOG_SAMPLE_RATE``, ``SYNCPERF_SYNC_LOG_RATE_LIMIT``,
        ``SYNCPERF_SYNC_LOG_STARTS`` (comma-separated operations) and ``SYNCPERF_PLANS``.

        An empty variable is the same as an unset one; an empty item in a comma-separated
        one is not accepted (never skipped: ``,`` is not an empty allowlist). The ``OTEL_*``
        variables mean what the OpenTelemetry specification says (``_otel_env``): an invalid
        one is logged and ignored. An invalid ``SYNCPERF_*`` variable raises, unless
        ``lenient``: then it is logged (without its value) and ignored alone, the other
        variables still apply. A rejected variable's value is never quoted, in the error or
        the log (a token may be misplaced in any variable): it is described by type and size.

        Raises:
            ConfigError: a ``SYNCPERF_*`` variable (unless ``lenient``) or an override holds
                a value syncperf does not accept.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}

        def offer(var: str, raw: str, key: str, value: Any, strict: bool) -> None:
            try:
                cls(**{key: value})  # each option is checked on its own
            except Exception as error:  # leniently, reading never raises
                _reject(var, raw, error, strict)
            else:
                values[key] = value

        if otel_env.value(env, "OTEL_SDK_DISABLED") is not None:
            values["enabled"] = not otel_env.sdk_disabled(env)
        for var, key in (
            ("OTEL_METRIC_EXPORT_INTERVAL", "export_interval"),
            ("OTEL_METRIC_EXPORT_TIMEOUT", "export_timeout"),
        ):
            if (ms := otel_env.number(env, var)) is not None:
                offer(var, str(env.get(var)), key, ms / 1000.0, strict=False)
        if (size := otel_env.integer(env, "OTEL_BSP_MAX_QUEUE_SIZE")) is not None:
            queue = str(env.get("OTEL_BSP_MAX_QUEUE_SIZE"))
            offer("OTEL_BSP_MAX_QUEUE_SIZE", queue, "span_queue_size", size, strict=False)
        found = otel_env.first(
            env, "OTEL_PYTHON_FASTAPI_EXCLUDED_URLS", "OTEL_PYTHON_EXCLUDED_URLS"
        )
        if found is not None:
            offer(found[0], found[1], "excluded_urls", found[1], strict=False)
        for key, parse in SYNCPERF_VARS.items():
            var = "SYNCPERF_" + key.upper()
            if (raw := otel_env.value(env, var)) is None:
                continue
            try:
                parsed = parse(var, raw)
            except Exception as error:  # leniently, reading never raises
                _reject(var, raw, error, strict=not lenient)
            else:
                offer(var, raw, key, parsed, strict=not lenient)
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            name = sorted(unknown)[0]
            accepted = "one of " + ", ".join(f.name for f in dataclasses.fields(cls))
            raise ConfigError(name, gate.not_quoted(overrides[name]), accepted)  # a typo's value
        values.update(overrides)
        return cls(**values)


_FLOAT_OPTIONS = (
    ("trace_sample_rate", 0.0, 1.0, False),
    ("slow_threshold", 0.0, MAX_SECONDS, True),
    ("overhead_budget", 0.0, MAX_SECONDS, True),
    ("export_interval", 0.0, MAX_SECONDS, True),
    ("export_timeout", 0.0, MAX_SECONDS, True),
    ("shutdown_timeout", 0.0, MAX_SECONDS, True),
    ("shed_cooldown", 0.0, MAX_SECONDS, False),
    ("sync_log_sample_rate", 0.0, 1.0, False),
    ("sync_log_rate_limit", 0.0, math.inf, True),
)
"""The number options: name, low, high, whether ``low`` itself is excluded."""


def _reject(var: str, raw: str, error: Exception, strict: bool) -> None:
    """Variable ``var`` holds a value that is not accepted: a ``ConfigError`` naming it when
    ``strict``, else a warning; its value described, never quoted, either way. An error other
    than ``ConfigError`` (none is expected) is reported the same way, by its type only."""
    if isinstance(error, ConfigError):
        accepted = error.accepted
    else:
        accepted = f"a value syncperf can read (reading it raised {type(error).__name__})"
    if strict:
        raise ConfigError(var, gate.not_quoted(raw), accepted) from None
    otel_env.warn(var, raw, accepted)


def check_patterns(name: str, value: object) -> str:
    """Comma-separated regular expressions (the contrib instrumentations' format), as a plain
    ``str``. A pattern ``re.compile`` rejects with another error than ``re.error`` (a repeat
    count past its limit, too deep a nesting) is not accepted either."""
    accepted = "comma-separated regular expressions (a string)"
    if not isinstance(value, str):
        raise ConfigError(name, value, accepted)
    text = str.__str__(value)
    try:
        re.compile("|".join(part.strip() for part in text.split(",")))
    except (re.error, OverflowError, RecursionError, ValueError):
        raise ConfigError(name, value, accepted) from None
    return text


def check_levels(option: str, value: object) -> Mapping[str, int]:
    """Levels by record kind (names or numbers), merged over ``SYNC_LOG_LEVELS``, read-only."""
    accepted = (
        "a mapping of " + ", ".join(SYNC_LOG_LEVELS) + " to a logging level "
        "(DEBUG, INFO, WARNING, ERROR, CRITICAL or an integer from 1 to 50)"
    )
    if not isinstance(value, Mapping):
        raise ConfigError(option, value, accepted)
    levels = dict(SYNC_LOG_LEVELS)
    for key, given in value.items():
        kind, level = _plain(key), _plain(given)  # a subclass's methods never run
        if isinstance(level, str):
            level = _LEVEL_NAMES.get(level.strip().upper(), level)
        if (
            not isinstance(kind, str)
            or kind not in SYNC_LOG_LEVELS
            or isinstance(level, bool)
            or not isinstance(level, int)
            or not 1 <= level <= 50
        ):
            raise ConfigError(option, value, accepted)
        levels[kind] = level
    return MappingProxyType(levels)


def _plain(value: object) -> object:
    """A ``str`` or ``int`` (not ``bool``) as the plain one; anything else as it is."""
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return int.__int__(value)
    return value


def check_objects(config: Config) -> None:
    """The OpenTelemetry and prometheus_client objects among the options: a wrong one would
    be accepted, then fail every export with a line at DEBUG only."""
    if not isinstance(config.prometheus, bool) and config.prometheus is not None:
        check_registry("prometheus", config.prometheus, "True, False or ")
    provider = config.tracer_provider
    if provider is not None and not callable(getattr(provider, "get_tracer", None)):
        raise ConfigError("tracer_provider", provider, "an OpenTelemetry TracerProvider or None")
    if config.resource is not None:
        from opentelemetry.sdk.resources import Resource

        if not isinstance(config.resource, Resource):
            raise ConfigError("resource", config.resource, "an SDK Resource or None")
    if config.metric_exporters:
        from opentelemetry.sdk.metrics.export import MetricExporter

        if not all(isinstance(e, MetricExporter) for e in config.metric_exporters):
            accepted = "a sequence of MetricExporter"
            raise ConfigError("metric_exporters", config.metric_exporters, accepted)


def check_registry(name: str, value: object, alternatives: str = "") -> None:
    """A ``prometheus_client`` registry (what has ``register`` and ``unregister``)."""
    methods = (getattr(value, m, None) for m in ("register", "unregister"))
    if isinstance(value, type) or not all(callable(m) for m in methods):
        raise ConfigError(name, value, alternatives + "a prometheus_client CollectorRegistry")


HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""A header name: a token (RFC 9110); no other can be sent, nor match a received one."""
HEADER_NAME_ACCEPTED = "a header name: letters, digits and !#$%&'*+-.^_`|~ (an RFC 9110 token)"


def check_header_name(name: str, value: object, alternatives: str = "") -> str:
    """A header name (``HEADER_NAME``), as a plain ``str`` lowercased."""
    if not (isinstance(value, str) and HEADER_NAME.fullmatch(value)):
        raise ConfigError(name, value, HEADER_NAME_ACCEPTED + alternatives)
    return str.lower(value)


def check_callable(name: str, value: object) -> None:
    """None or a callable (an optional callback)."""
    if value is not None and not callable(value):
        raise ConfigError(name, value, "a callable or None")


def check_text(name: str, value: object) -> None:
    """None or a non-empty string (an optional field name or separator)."""
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigError(name, value, "a non-empty string or None")


def check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ConfigError(name, value, "True or False")


def check_int(name: str, value: object, *, minimum: int) -> int:
    """An ``int`` (not ``bool``) >= ``minimum``, as a plain ``int`` (never a subclass)."""
    number = _plain(value)
    if type(number) is not int or number < minimum:
        raise ConfigError(name, value, f"an integer >= {minimum}")
    return number


def check_float(
    name: str, value: object, *, low: float, high: float, open_low: bool = False
) -> float:
    """A number (not ``bool``) in the range, as a plain ``float`` (never a subclass)."""
    number = math.nan
    if isinstance(value, float):
        number = float.__float__(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        with contextlib.suppress(OverflowError):  # an int too large for a float: nan
            number = float(int.__int__(value))
    ok = not math.isnan(number) and (number > low if open_low else number >= low)
    if not (ok and number <= high):
        low_text = f"> {low}" if open_low else f">= {low}"
        high_text = "" if high == math.inf else f" and <= {high}"
        raise ConfigError(name, value, f"a number {low_text}{high_text}")
    return number

"""The SDK's own variables, read by syncperf before it builds a provider.

Left to itself the SDK raises a bare ``ValueError`` quoting the value on some of them
(``OTEL_BSP_MAX_QUEUE_SIZE=0``, ``OTEL_METRIC_EXPORT_INTERVAL=0``, a span limit that is no
integer, an unknown exemplar filter) and logs others word for word (a batch size that is no
number, with a traceback; an unknown sampler; a boolean that is neither ``true`` nor
``false``). syncperf reads them as the specification says (empty is unset; an invalid value
is warned about by name, never quoted, and ignored as if unset) and hands the SDK explicit
values, or a copy of the environment without the ignored ones.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
from collections.abc import Iterator, Mapping
from typing import Any

from syncperf import _gate as gate
from syncperf import _otel_env as otel_env
from syncperf._metrics.resources import swapped_environ
from syncperf.exceptions import ConfigError

LIMITS = (
    "OTEL_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT",
    "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT",
    "OTEL_SPAN_EVENT_COUNT_LIMIT",
    "OTEL_SPAN_LINK_COUNT_LIMIT",
    "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT",
)
"""The span limits (``SpanLimits()`` reads them): an integer >= 0 (empty: no limit)."""
EXEMPLAR_FILTERS = ("trace_based", "always_on", "always_off")
_SDK_MODULES = (
    "opentelemetry.sdk.trace",
    "opentelemetry.sdk.trace.export",
    "opentelemetry.sdk.metrics._internal",
    "opentelemetry.sdk.metrics._internal.export",
    "opentelemetry.sdk.environment_variables._internal",
)
"""The SDK modules that read ``environ`` while a provider, processor or reader is built."""
_DEFAULT_SAMPLER = "parentbased_always_on"


def _positive(env: Mapping[str, str], var: str, default: float, warned: bool = True) -> float:
    """A number > 0 (finite) of ``var``, else ``default`` (warned about unless not ``warned``:
    ``Config.from_env`` warned already)."""
    raw = otel_env.value(env, var)
    if raw is None:
        return default
    try:
        number = float(raw)
    except ValueError:
        number = math.nan
    if not 0 < number < math.inf:  # nan fails too
        if warned:
            otel_env.warn(var, raw, "a number > 0")
        return default
    return number


def batch_arguments(env: Mapping[str, str]) -> dict[str, Any]:
    """The ``BatchSpanProcessor``'s arguments from the ``OTEL_BSP_*`` variables."""
    queue = int(_positive(env, "OTEL_BSP_MAX_QUEUE_SIZE", 2048, warned=False))
    default_batch = min(512, queue)
    batch = int(_positive(env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", default_batch))
    if batch > queue:
        raw = otel_env.value(env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE") or ""
        accepted = "a number > 0 and <= the queue size (OTEL_BSP_MAX_QUEUE_SIZE)"
        otel_env.warn("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", raw, accepted)
        batch = default_batch
    return {
        "max_queue_size": queue,
        "schedule_delay_millis": _positive(env, "OTEL_BSP_SCHEDULE_DELAY", 5000),
        "max_export_batch_size": batch,
        "export_timeout_millis": _positive(env, "OTEL_BSP_EXPORT_TIMEOUT", 30000),
    }


def sampler(env: Mapping[str, str]) -> Any:
    """The sampler ``OTEL_TRACES_SAMPLER`` and ``OTEL_TRACES_SAMPLER_ARG`` name."""
    from opentelemetry.sdk.trace import sampling

    known: Mapping[str, Any] = sampling._KNOWN_SAMPLERS
    raw = otel_env.value(env, "OTEL_TRACES_SAMPLER")
    name = (raw or _DEFAULT_SAMPLER).lower()
    if name not in known:
        assert raw is not None
        otel_env.warn("OTEL_TRACES_SAMPLER", raw, " or ".join(known))
        name = _DEFAULT_SAMPLER
    if name not in ("traceidratio", "parentbased_traceidratio"):
        return known[name]
    rate = otel_env.number(env, "OTEL_TRACES_SAMPLER_ARG")
    if rate is not None and not 0 <= rate <= 1:
        raw_arg = otel_env.value(env, "OTEL_TRACES_SAMPLER_ARG") or ""
        otel_env.warn("OTEL_TRACES_SAMPLER_ARG", raw_arg, "a number from 0 to 1")
        rate = None
    return known[name](1.0 if rate is None else rate)


def _limit_ok(raw: str) -> bool:
    try:
        return int(raw) >= 0
    except ValueError:
        return False


def sdk_view(env: Mapping[str, str], traces: bool) -> dict[str, str]:
    """A copy of ``env`` for the SDK to read, without the variables it would refuse (those
    the providers of ``traces``, else of metrics, read are warned about) or log; empty ones
    are unset, as the specification says (the SDK refuses an empty limit)."""
    view = {name: value for name, value in env.items() if not name.startswith("OTEL_")}
    for name in ("OTEL_SDK_DISABLED", *LIMITS):
        if (raw := otel_env.value(env, name)) is None:
            if name in env:  # the SDK's own reading of an empty limit: none
                view[name] = ""
            continue
        if name in LIMITS and not _limit_ok(raw):
            if traces:
                otel_env.warn(name, raw, "an integer >= 0")
            continue
        view[name] = raw
    var = "OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED"
    if (raw := otel_env.value(env, var)) is not None:
        if raw.lower() in ("true", "false"):
            view[var] = raw.lower()
        elif traces:
            otel_env.warn(var, raw, "true or false")
    var = "OTEL_METRICS_EXEMPLAR_FILTER"
    if (raw := otel_env.value(env, var)) is not None:
        if raw.lower() in EXEMPLAR_FILTERS:
            view[var] = raw.lower()
        elif not traces:
            otel_env.warn(var, raw, " or ".join(EXEMPLAR_FILTERS))
    return view


class _ValueNotQuoted(logging.Filter):
    """Describes, never quotes, the value in the SDK's warning about a variable it refuses
    (``Invalid value for %s: %r``): it logs that on every ``get_tracer()`` too."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        quoting = str(record.msg).startswith("Invalid value for %s")
        if quoting and isinstance(args, tuple) and len(args) >= 2:
            record.args = (args[0], gate.not_quoted(args[1]), *args[2:])
        return True


_NOT_QUOTED = _ValueNotQuoted()
_QUOTING_LOGGERS = (
    "opentelemetry.sdk.environment_variables._internal",
    "opentelemetry.exporter.otlp.common._aggregation",
    "opentelemetry.exporter.otlp.proto.common._internal.metrics_encoder",
)


def values_not_quoted() -> None:
    """Make the SDK's warnings about a refused variable describe its value (once for all)."""
    for name in _QUOTING_LOGGERS:
        logging.getLogger(name).addFilter(_NOT_QUOTED)  # a no-op when already there


@contextlib.contextmanager
def building(env: Mapping[str, str], traces: bool) -> Iterator[None]:
    """While SDK providers are built, the SDK reads ``sdk_view(env, traces)``; a
    ``ValueError`` it raises still (the value may be in its message) is a ``ConfigError``
    naming no value."""
    values_not_quoted()
    modules = [importlib.import_module(name) for name in _SDK_MODULES]
    try:
        with swapped_environ(modules, sdk_view(env, traces)):
            yield
    except ConfigError:
        raise
    except ValueError as error:
        shown = gate.NotQuoted(f"refused by the SDK ({gate.raised_at(error)})")
        accepted = "OTEL_* variables the OpenTelemetry SDK accepts (docs/export.md)"
        raise ConfigError("the OTEL_* environment", shown, accepted) from None

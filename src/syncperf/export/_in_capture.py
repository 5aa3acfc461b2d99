"""The set-ups inside ``testing.capture()``: their options are checked and their config noted
on the capture, as ``configure()``'s is; nothing global is installed (no provider, exporter,
server or registry: docs/export.md)."""

from __future__ import annotations

from typing import Any

from syncperf import _runtime
from syncperf._config import Config
from syncperf.export import _otlp
from syncperf.export._handle import OtlpExport

__all__ = ["note", "open_capture", "otlp"]


def open_capture() -> Any:
    """The ``testing.Capture`` in force, or None (outside any, or it has ended)."""
    held = _runtime.installed
    found = None if held is None else held.capture
    return found if found is not None and not found.closed else None


def note(cap: Any, config: Config, options: Any) -> Config:
    """Note ``config`` on ``cap`` when the set-up was given ``configure`` options (without
    any it keeps the settings in force); return the config the set-up reports."""
    if not options:
        return cap.runtime.config  # type: ignore[no-any-return]
    cap.configured.append(config)
    return config


def otlp(
    cap: Any, config: Config, options: Any, traces: str | None, metrics: str | None
) -> OtlpExport:
    """What ``setup_otlp`` reports inside ``cap``: the protocols it would use (their exporter
    packages must be installed), no provider, no exporter."""
    for protocol, signal in ((traces, "trace"), (metrics, "metric")):
        if protocol is not None:
            _otlp.exporter_class(protocol, signal)
    return OtlpExport(note(cap, config, options), None, None, traces, metrics)

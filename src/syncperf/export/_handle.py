"""``OtlpExport``: what ``setup_otlp`` installed, and how to stop it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from syncperf import _runtime
from syncperf._config import Config
from syncperf._metrics import outputs
from syncperf._metrics.bounded import Deadline, run_bounded
from syncperf._tracing.finisher import end_queued
from syncperf.export import _otlp

__all__ = ["OtlpExport"]

_logger = logging.getLogger("syncperf")


@dataclass
class OtlpExport:
    """What ``setup_otlp`` installed.

    Attributes:
        config: The syncperf config now active.
        tracer_provider: The tracer provider sync spans go to (the existing global one, or
            the one created here), or None when traces are off.
        meter_provider: The global meter provider created here for other instrumentation,
            or None (one existed, or metrics are off).
        joined_meter_provider: The application's global SDK meter provider whose readers
            receive syncperf's metrics (instead of an exporter of syncperf's own), or None.
        traces_protocol: Protocol of the span exporter, or None.
        metrics_protocol: Protocol of the metric exporter, or None.
        owns_tracer_provider: True when the tracer provider was created (and set global) here.
    """

    config: Config
    tracer_provider: Any = None
    meter_provider: Any = None
    traces_protocol: str | None = None
    metrics_protocol: str | None = None
    owns_tracer_provider: bool = False
    joined_meter_provider: Any = None
    _exporter: Any = field(default=None, repr=False)
    _shut: bool = field(default=False, repr=False)

    def shutdown(self) -> None:
        """Flush and stop what ``setup_otlp`` created (a global provider stays registered),
        holding the caller at most ``shutdown_timeout`` in all: what a collector that does
        not answer keeps longer goes on in the background, or is lost at exit."""
        if self._shut:
            return
        self._shut = True
        rt = _runtime.current()
        limit = rt.config.shutdown_timeout
        left = Deadline(limit).left
        end_queued([rt.finisher], limit)  # a stalled processor: bounded
        if self._exporter is not None and outputs.OUTPUTS.exporters.get("otlp") is self._exporter:
            del outputs.OUTPUTS.exporters["otlp"]
            rt.sync_outputs(timeout=left())  # a last export, then the exporter shuts down
        tracer_provider = self.tracer_provider if self.owns_tracer_provider else None
        providers = tracer_provider is not None or self.meter_provider is not None
        if providers and not run_bounded(
            lambda: _otlp.shut_down(tracer_provider, self.meter_provider, left),
            left(),
            "syncperf-provider-shutdown",
        ):
            _logger.warning(
                "syncperf: the providers setup_otlp built did not shut down within %.1f s "
                "(is the collector answering?); what they had not exported is lost",
                limit,
            )

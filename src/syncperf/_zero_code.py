"""Zero-code start-up: the ``opentelemetry_instrumentor`` entry point named ``syncperf``.

``opentelemetry-instrument`` (the launcher of ``opentelemetry-instrumentation``) first runs
the distro's configurator, which builds the global tracer and meter providers from the
``OTEL_*`` variables (``OTEL_METRICS_EXPORTER=otlp,prometheus``...), then calls every
installed instrumentor. syncperf's gives the global SDK meter provider's readers syncperf's
metrics (``syncperf.export.setup_meter_provider``); spans need nothing, as syncperf uses
the global tracer provider. ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=syncperf`` turns it off,
as for any instrumentor.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from syncperf._gate import raised_at

_logger = logging.getLogger("syncperf")


class SyncPerfInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Feeds syncperf's metrics to the meter provider ``opentelemetry-instrument`` built."""

    def instrumentation_dependencies(self) -> Collection[str]:
        """Nothing to instrument: syncperf's own integrations are explicit."""
        return ()

    def _instrument(self, **kwargs: Any) -> None:
        try:
            from syncperf.export import setup_meter_provider

            if not setup_meter_provider(kwargs.get("meter_provider")):
                _logger.info("syncperf: no SDK meter provider to join; metrics stay local")
        except Exception as error:  # start-up of the application must go on
            _logger.warning(
                "syncperf: joining the OpenTelemetry pipeline failed: %s", raised_at(error)
            )

    def _uninstrument(self, **kwargs: Any) -> None:
        """The readers keep receiving syncperf's metrics until the provider shuts down."""

"""The resource and instrumentation scope of syncperf's metrics, and a forked child's own
``service.instance.id``."""

from __future__ import annotations

import os
import uuid
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope


def resource_of(tracer: Any) -> Any:
    """The resource of syncperf's metrics: that of the tracer its spans go to, or the SDK's
    default one (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``)."""
    return Resource.create() if tracer is None else tracer.resource


def syncperf_scope() -> InstrumentationScope:
    """The instrumentation scope of syncperf's metrics."""
    from syncperf._version import __version__

    return InstrumentationScope("syncperf", __version__)


def child_instance_ids() -> dict[str, str]:
    """The parent's SDK-generated ``service.instance.id`` mapped to this process's own.

    ``Resource.create()`` cannot run here (its detector pool deadlocks in a fork hook), so
    a new id is made here and handed to the SDK's detector, which would make the same
    per-process choice later; every resource of this child then agrees on it.
    """
    from opentelemetry.sdk import resources

    parent = getattr(resources, "_service_instance_id", None)
    if not isinstance(parent, str) or getattr(resources, "_service_instance_id_pid", None) is None:
        return {}
    child = str(uuid.uuid4())
    resources._service_instance_id = child
    resources._service_instance_id_pid = os.getpid()
    return {parent: child}

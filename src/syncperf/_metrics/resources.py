"""The resource and instrumentation scope of syncperf's metrics, and a forked child's own
``service.instance.id``."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import unquote

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from syncperf import _gate as gate

_logger = logging.getLogger("syncperf")
_OWN = ("OTEL_RESOURCE_ATTRIBUTES", "OTEL_SERVICE_NAME", "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS")
"""Read by syncperf itself: the SDK logs a malformed entry (or detector name) word for word."""


def resource_of(tracer: Any) -> Any:
    """The resource of syncperf's metrics: that of the tracer its spans go to, or the SDK's
    default one (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``)."""
    return env_resource(os.environ) if tracer is None else tracer.resource


@contextlib.contextmanager
def swapped_environ(modules: Iterable[Any], view: Mapping[str, str]) -> Iterator[None]:
    """While inside, ``modules`` (of the SDK, which read ``from os import environ``) read
    ``view`` instead; ``os.environ`` itself is left alone."""
    saved = [(module, module.environ) for module in modules]
    for module, _ in saved:
        module.environ = view
    try:
        yield
    finally:
        for module, environ in saved:
            module.environ = environ


def _warn(var: str, raw: str, accepted: str) -> None:
    _logger.warning(
        "syncperf: ignoring %s (%s, not quoted): expected %s", var, gate.describe(raw), accepted
    )


def _detectors(raw: str, warn: bool = True) -> str:
    """The names of ``OTEL_EXPERIMENTAL_RESOURCE_DETECTORS`` that are installed (or ``*``);
    another is left out and (``warn``) warned about by its position (the SDK logs its
    name)."""
    from opentelemetry.util._importlib_metadata import entry_points

    installed = set(entry_points(group="opentelemetry_resource_detector").names) | {"*"}
    kept = []
    for n, name in enumerate(raw.split(","), 1):
        if name.strip() in installed:
            kept.append(name.strip())
        elif name.strip() and warn:
            var = f"OTEL_EXPERIMENTAL_RESOURCE_DETECTORS entry {n}"
            _warn(var, name, "the name of an installed resource detector")
    return ",".join(kept)


def _view(detectors: bool, warn: bool) -> dict[str, str]:
    """``os.environ`` as the SDK's ``Resource.create()`` may read it: without the variables
    syncperf reads itself (``_OWN``), but with the installed ``detectors``."""
    view = {k: v for k, v in os.environ.items() if k not in _OWN}
    raw = (os.environ.get("OTEL_EXPERIMENTAL_RESOURCE_DETECTORS") or "").strip()
    if detectors and raw:
        view["OTEL_EXPERIMENTAL_RESOURCE_DETECTORS"] = _detectors(raw, warn)
    return view


def import_quietly(name: str) -> Any:
    """Import module ``name`` (an OTLP exporter's) while the SDK's resource code reads the
    environment without the variables syncperf reads itself: the gRPC exporter imports the
    SDK's logs module, whose import runs ``Resource.create()``, which logs a malformed
    ``OTEL_RESOURCE_ATTRIBUTES`` entry or detector name word for word. (Only the default
    resource of log records made without one misses them; syncperf makes none.)"""
    from opentelemetry.sdk import resources

    with swapped_environ([resources], _view(True, warn=False)):
        return importlib.import_module(name)


def env_resource(env: Mapping[str, str]) -> Any:
    """The SDK's default resource, with ``env``'s ``OTEL_SERVICE_NAME`` and
    ``OTEL_RESOURCE_ATTRIBUTES`` read by syncperf (an entry that is no ``key=value`` is
    warned about by its position, never quoted). ``Resource.create()`` runs without them;
    for another environment than ``os.environ`` only what it adds by itself
    (``telemetry.sdk.*``, the ``service.instance.id``) is kept of it."""
    from opentelemetry.sdk import resources

    with swapped_environ([resources], _view(env is os.environ, warn=True)):
        created = Resource.create()
    attributes = dict(created.attributes)
    if env is not os.environ:
        attributes = {
            key: value
            for key, value in attributes.items()
            if key.startswith("telemetry.sdk.") or key == "service.instance.id"
        }
        default = "unknown_service" + (
            f":{os.path.basename(sys.executable)}" if sys.executable else ""
        )
        attributes["service.name"] = default
    var = "OTEL_RESOURCE_ATTRIBUTES"
    for n, item in enumerate((env.get(var) or "").strip().split(","), 1):
        key, equals, value = item.partition("=")
        if key.strip() and equals:
            attributes[key.strip()] = unquote(value.strip())
        elif item.strip():
            _warn(f"{var} entry {n}", item, "key=value, the value URL-encoded")
    name = (env.get("OTEL_SERVICE_NAME") or "").strip()
    if name:
        attributes["service.name"] = name
    return Resource(attributes)


def syncperf_scope() -> InstrumentationScope:
    """The instrumentation scope of syncperf's metrics."""
    from syncperf._version import __version__

    return InstrumentationScope("syncperf", __version__)


def child_instance_ids() -> dict[str, str]:
    """The parent's SDK-generated ``service.instance.id`` mapped to this process's own.

    ``Resource.create()`` cannot run here (its detector pool deadlocks in a fork hook), so
    a new id is made here and handed to the SDK's detector, which would make the same
    per-process choice later; every resource of this child then agrees on it. Called again
    in the same child (by each fork hook that needs it), it returns the same mapping.
    """
    from opentelemetry.sdk import resources

    global _mapped
    if _mapped is not None and _mapped[0] == os.getpid():
        return dict(_mapped[1])
    parent = getattr(resources, "_service_instance_id", None)
    if not isinstance(parent, str) or getattr(resources, "_service_instance_id_pid", None) is None:
        return {}
    child = str(uuid.uuid4())
    resources._service_instance_id = child
    resources._service_instance_id_pid = os.getpid()
    _mapped = (os.getpid(), {parent: child})
    return {parent: child}


_mapped: tuple[int, dict[str, str]] | None = None
"""This process's id and the mapping ``child_instance_ids`` made in it."""


def with_own_instance_id(resource: Any, instance_ids: Mapping[str, str]) -> Any:
    """``resource`` with a parent's ``service.instance.id`` replaced by this child's own
    (``instance_ids`` maps old to new); unchanged when it names no such id."""
    old = None if resource is None else resource.attributes.get("service.instance.id")
    if isinstance(old, str) and old in instance_ids:
        return resource.merge(Resource({"service.instance.id": instance_ids[old]}))
    return resource

"""Which requests the ASGI middleware records: sync-route templates compiled once and matched
cheaply per request, the excluded URLs, and which requests are live (long-poll, streams).

Only the user's *sync* templates are matched here (a dict lookup for static paths, a prefix
check and one regex for parameterised ones); the application's own routing is never
re-run. ``http.route`` for other requests is read from what the framework's router left in
the scope (``scope["route"]``), never from the raw path.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from syncperf._config import check_patterns
from syncperf._extractors import Adapter, check_adapter
from syncperf._gate import check_entity, check_operation, text
from syncperf.exceptions import ConfigError

__all__ = [
    "CompiledRoute",
    "RouteTable",
    "SyncRoute",
    "exclusions",
    "framework_route",
    "included_route",
    "is_live",
    "live_query",
    "live_request",
    "mount_base",
    "route_path",
]

_PARAM = re.compile(r"{([a-zA-Z_][a-zA-Z0-9_]*)(?::([a-zA-Z_][a-zA-Z0-9_]*))?}")
_CONVERTORS = {  # Starlette's convertor regexes, so our matches agree with the router's
    "str": "[^/]+",
    "path": ".*",
    "int": "[0-9]+",
    "float": r"[0-9]+(?:\.[0-9]+)?",
    "uuid": "[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}",
}


@dataclass(frozen=True)
class SyncRoute:
    """What one sync route template measures.

    Attributes:
        operation: ``"pull"``, ``"push"`` or another low-cardinality operation name.
        entity: A fixed entity for the route. Leave it None to take the entity from an
            ``{entity}`` path parameter of the template (or from the handler).
        adapter: A protocol adapter (``syncperf.Adapter``: ``on_request(op, body)`` and
            ``on_response(op, body)``) fed the JSON-decoded request and response bodies.
    """

    operation: str
    entity: str | None = None
    adapter: Adapter | None = None

    def __post_init__(self) -> None:
        # A ``str`` subclass (a ``StrEnum`` member) is kept as its plain value: the fields
        # become metric attributes as they are.
        object.__setattr__(
            self, "operation", check_operation(self.operation, "SyncRoute.operation")
        )
        object.__setattr__(self, "entity", check_entity(self.entity, "SyncRoute.entity"))
        adapter = self.adapter
        if adapter is not None:
            check_adapter("SyncRoute.adapter", adapter)


@dataclass(frozen=True)
class CompiledRoute:
    """A sync template ready for matching."""

    template: str
    route: SyncRoute
    entity_param: bool
    prefix: str
    regex: re.Pattern[str] | None

    @cached_property
    def url_path(self) -> str:
        """``url.path`` of a request at the app's root: the template (no parameter's value)."""
        return text(self.template)


class RouteTable:
    """The sync templates of one middleware: ``match(path)`` -> (route, entity) or None."""

    __slots__ = ("dynamic", "static")

    def __init__(self, routes: Mapping[str, str | SyncRoute] | None) -> None:
        self.static: dict[str, CompiledRoute] = {}
        self.dynamic: tuple[CompiledRoute, ...] = ()
        if routes is None:
            return
        if not isinstance(routes, Mapping):
            raise ConfigError(
                "routes",
                routes,
                'a mapping of route template to operation, e.g. {"/sync/pull": "pull"}',
            )
        dynamic = []
        for template, value in routes.items():
            compiled = _compile(template, value)
            if compiled.regex is None:
                self.static[template] = compiled
            else:
                dynamic.append(compiled)
        self.dynamic = tuple(dynamic)

    def __bool__(self) -> bool:
        return bool(self.static or self.dynamic)

    def match(self, path: str) -> tuple[CompiledRoute, str | None] | None:
        """The sync route ``path`` belongs to and its ``{entity}`` value, or None."""
        found = self.static.get(path)
        if found is not None:
            return found, None
        for compiled in self.dynamic:
            if path.startswith(compiled.prefix):
                hit = compiled.regex.fullmatch(path)  # type: ignore[union-attr]
                if hit is not None:
                    return compiled, hit.group("entity") if compiled.entity_param else None
        return None


def _compile(template: object, value: object) -> CompiledRoute:
    if not isinstance(template, str) or not template.startswith("/"):
        raise ConfigError("routes", template, 'route templates starting with "/"')
    if isinstance(value, str):
        route = SyncRoute(check_operation(value, f"routes[{template!r}]"))
    elif isinstance(value, SyncRoute):
        route = value
    else:
        raise ConfigError(f"routes[{template!r}]", value, "an operation name or a SyncRoute")
    pattern = ["^"]
    position = 0
    names = set()
    for param in _PARAM.finditer(template):
        name, convertor = param.group(1), param.group(2) or "str"
        if convertor not in _CONVERTORS:
            raise ConfigError(
                f"routes[{template!r}]",
                convertor,
                "a path convertor among " + ", ".join(_CONVERTORS),
            )
        if name in names:
            raise ConfigError(f"routes[{template!r}]", name, "distinct path parameter names")
        names.add(name)
        pattern.append(re.escape(template[position : param.start()]))
        pattern.append(f"(?P<{name}>{_CONVERTORS[convertor]})")
        position = param.end()
    if "{" in template[position:] or "}" in template[position:]:
        raise ConfigError(
            "routes", template, "templates whose parameters look like {name} or {name:convertor}"
        )
    entity_param = "entity" in names
    if entity_param and route.entity is not None:
        raise ConfigError(
            f"routes[{template!r}]",
            route.entity,
            "either an {entity} path parameter or SyncRoute(entity=...), not both",
        )
    if not names:
        return CompiledRoute(template, route, False, template, None)
    pattern.append(re.escape(template[position:]) + "$")
    first = _PARAM.search(template)
    prefix = template[: first.start()] if first else template
    return CompiledRoute(template, route, entity_param, prefix, re.compile("".join(pattern)))


def route_path(path: str, root: object) -> str:
    """The request ``path`` relative to the application's ``root_path`` (as Starlette routes
    it); a ``root`` that is not a str is none."""
    if not root or type(root) is not str or not path.startswith(root):
        return path
    if path == root:
        return ""
    return path[len(root) :] if path[len(root)] == "/" else path


def exclusions(patterns: str | None) -> Any:
    """The contrib instrumentations' ``ExcludeList`` for ``patterns``, or False for none.

    Raises:
        ConfigError: ``patterns`` is not a string of valid regular expressions.
    """
    if patterns is None or patterns == "":
        return False
    patterns = check_patterns("excluded_urls", patterns)
    from opentelemetry.util.http import parse_excluded_urls

    return parse_excluded_urls(patterns)


def framework_route(scope: MutableMapping[str, Any], entry_root: str) -> str | None:
    """``http.route`` from the route the framework matched, or None (never the raw path).

    Starlette and FastAPI leave the matched route in ``scope["route"]``. Inside a mount its
    template is relative to the mount, whose literal path is added back (a mount with path
    parameters has no safe template and yields None), and so is the path of the mount this
    middleware's app sits in (``mount_base``): the route is relative to the server's root.
    """
    route = included_route(scope, scope.get("route"))
    if route is None:
        return None
    template = getattr(route, "path_format", None)
    if not isinstance(template, str):
        return None
    root = scope.get("root_path", "")
    if root == entry_root:
        if scope.get("app_root_path", root) == root:  # the server's app: not mounted
            return template
        return mount_base(scope, entry_root, route) + template
    if not isinstance(root, str) or not root.startswith(entry_root):
        return None
    params = scope.get("path_params")
    if params and (
        type(params) is not dict or not set(params) <= set(getattr(route, "param_convertors", ()))
    ):
        return None  # a mount contributed parameters: its prefix holds raw values
    prefix = root[len(entry_root) :]
    if hasattr(route, "routes") or type(route).__name__ == "Mount":
        # the mount itself is the matched route: root_path already holds its path
        mount_path = getattr(route, "path", "")
        if not isinstance(mount_path, str) or not prefix.endswith(mount_path):
            return None
        prefix = prefix[: len(prefix) - len(mount_path)]
    return mount_base(scope, entry_root, route) + prefix + template


def mount_base(scope: MutableMapping[str, Any], entry_root: str, route: Any = None) -> str:
    """The path of the mounts an app was reached through (``""`` for the server's app):
    its ``root_path`` past the server's, which Starlette's ``Mount`` keeps in
    ``scope["app_root_path"]`` (a server's ``--root-path`` stays out of ``http.route``).

    ``""`` too when a mount has path parameters (``/t/{tenant}``): its path holds their
    values, and the route stays relative to the app. ``route``: the route matched inside the
    app, whose own parameters the scope holds besides the mounts' (None: before routing)."""
    server_root = scope.get("app_root_path")
    if type(server_root) is not str or not entry_root.startswith(server_root):
        return ""
    params = scope.get("path_params")
    if params and (
        type(params) is not dict or not set(params) <= set(getattr(route, "param_convertors", ()))
    ):
        return ""
    return entry_root[len(server_root) :]


def included_route(scope: MutableMapping[str, Any], route: Any) -> Any:
    """``route`` as included, when it belongs to a router included with a prefix.

    FastAPI (>= 0.16x) keeps an included router whole: ``scope["route"]`` is then the route as
    declared, without the include prefixes, and ``scope["fastapi"]["effective_route_context"]``
    the route as included (its ``path_format`` has them; a Starlette route or a mount of the
    router, which leaves ``scope["route"]`` unset, has its prefixed copy in
    ``starlette_route``). A context left by an outer app's router (``route`` is another
    route, matched by a mounted app) is not this route's.
    """
    fastapi = scope.get("fastapi")
    context = fastapi.get("effective_route_context") if type(fastapi) is dict else None
    if context is None:
        return route
    if route is None:
        return getattr(context, "starlette_route", None)
    return context if getattr(context, "original_route", None) is route else route


EVENT_STREAM = b"text/event-stream"
"""In an ``Accept`` header: the client asks for a stream (a live request)."""


def live_request(scope: MutableMapping[str, Any]) -> bool:
    """The default ``live`` predicate: ``?live=true`` (or ``1``), CouchDB's
    ``?feed=longpoll`` (or ``continuous``, ``eventsource``: how PouchDB's live replication
    polls ``_changes``) or ``Accept: text/event-stream``.

    Args:
        scope: The ASGI HTTP scope.

    Returns:
        True for a long-poll or streaming request.
    """
    if live_query(scope.get("query_string")):
        return True
    headers = scope.get("headers") or ()
    return any(name == b"accept" and EVENT_STREAM in value for name, value in headers)


def is_live(predicate: Callable[[Any], bool] | None, scope: Any, stream: bool) -> bool:
    """Whether a request is live by ``predicate`` (the ``live`` option); the default one's
    header is already known (``stream``: read in the middleware's one pass over them)."""
    if predicate is live_request:
        return stream or live_query(scope.get("query_string"))
    return predicate is not None and bool(predicate(scope))


LIVE_PARAMETERS = frozenset(
    {b"live=true", b"live=1", b"feed=longpoll", b"feed=continuous", b"feed=eventsource"}
)
"""Query parameters that ask for a live request, exactly as sent (CouchDB's ``feed``)."""


def live_query(query: object) -> bool:
    """Whether a query string asks for a live request (one of ``LIVE_PARAMETERS``); one
    that is not bytes asks for nothing."""
    # ``find``: ``in`` on bytes first tries the needle as an int, and formats the TypeError
    if type(query) is bytes and (query.find(b"live=") >= 0 or query.find(b"feed=") >= 0):
        return not LIVE_PARAMETERS.isdisjoint(query.split(b"&"))
    return False

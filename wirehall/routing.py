"""Path matching, route tables, groups, mounts and URL building.

Static paths are found with one dictionary look-up; dynamic paths are bucketed by their
first literal segment, so matching cost does not grow with the number of routes that
have other static prefixes.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from wirehall.errors import ConfigurationError
from wirehall.params import EndpointSpec
from wirehall.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "Converter",
    "Match",
    "Mount",
    "Route",
    "RouteInfo",
    "Router",
    "WebSocketRoute",
    "compile_path",
]

Handler = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Converter:
    """How one kind of path parameter is matched, converted and written back."""

    regex: str
    convert: Callable[[str], Any]
    to_string: Callable[[Any], str] = str


def _float_to_string(value: Any) -> str:
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


CONVERTERS: dict[str, Converter] = {
    "str": Converter(r"[^/]+", str),
    "int": Converter(r"[0-9]+", int),
    "float": Converter(r"[0-9]+(?:\.[0-9]+)?", float, _float_to_string),
    "uuid": Converter(
        r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
        uuid.UUID,
    ),
    "path": Converter(r".*", str),
}

_PARAM = re.compile(r"{([a-zA-Z_][a-zA-Z0-9_]*)(?::([a-zA-Z_][a-zA-Z0-9_]*))?}")


def compile_path(path: str) -> tuple[re.Pattern[str] | None, str, dict[str, Converter]]:
    """Compile `/users/{id:int}` into (regex or None when static, format string, converters)."""
    if not path.startswith("/"):
        raise ConfigurationError(f"route path {path!r} must start with '/'")
    regex, fmt, converters = "^", "", {}
    index = 0
    for match in _PARAM.finditer(path):
        name, kind = match.group(1), match.group(2) or "str"
        converter = CONVERTERS.get(kind)
        if converter is None:
            raise ConfigurationError(
                f"unknown converter {kind!r} in route {path!r}; use one of {', '.join(CONVERTERS)}"
            )
        if name in converters:
            raise ConfigurationError(f"parameter {name!r} appears twice in route {path!r}")
        literal = path[index : match.start()]
        regex += re.escape(literal) + f"(?P<{name}>{converter.regex})"
        fmt += literal.replace("{", "{{").replace("}", "}}") + "{" + name + "}"
        converters[name] = converter
        index = match.end()
    rest = path[index:]
    if "{" in rest or "}" in rest:
        raise ConfigurationError(f"route {path!r} has a malformed parameter; write {{name}} or {{name:int}}")
    if not converters:
        return None, path, {}
    regex += re.escape(rest) + "$"
    fmt += rest.replace("{", "{{").replace("}", "}}")
    return re.compile(regex), fmt, converters


def _first_segment(path: str) -> str | None:
    """The first path segment when it is a literal, else None."""
    segment = path[1:].split("/", 1)[0]
    return None if "{" in segment else segment


class _Pattern:
    """A compiled path shared by the HTTP methods of one route."""

    __slots__ = ("_single", "_steps", "converters", "format", "path", "regex")

    def __init__(self, path: str) -> None:
        self.path = path
        self.regex, self.format, self.converters = compile_path(path)
        # (name, convert) of each parameter, for `match`; convert is None where the matched
        # text is the value (str and path parameters)
        self._steps = tuple(
            (name, None if converter.convert is str else converter.convert)
            for name, converter in self.converters.items()
        )
        self._single = self._steps[0] if len(self._steps) == 1 else None

    def match(self, path: str) -> dict[str, Any] | None:
        if self.regex is None:
            return {} if path == self.path else None
        found = self.regex.match(path)
        if found is None:
            return None
        try:
            if self._single is not None:  # the commonest dynamic route: one parameter
                name, convert = self._single
                return {name: found[1] if convert is None else convert(found[1])}
            values: dict[str, Any] = {}
            for (name, convert), text in zip(self._steps, found.groups(), strict=True):
                values[name] = text if convert is None else convert(text)
            return values
        except (ValueError, OverflowError):
            return None

    def build(self, params: dict[str, Any]) -> str:
        missing = set(self.converters) - set(params)
        extra = set(params) - set(self.converters)
        if missing or extra:
            raise ConfigurationError(
                f"route {self.path!r} takes parameters {sorted(self.converters)}, got {sorted(params)}"
            )
        return self.format.format(
            **{name: self.converters[name].to_string(value) for name, value in params.items()}
        )


@dataclass(slots=True)
class Route:
    """An HTTP route: a path, an endpoint and the methods it answers.

    Usable as a table entry: `app.add_routes([Route("/", home), ...])`.
    """

    path: str
    endpoint: Any
    methods: Sequence[str] | None = None
    name: str | None = None
    status_code: int | None = None


@dataclass(slots=True, eq=False)
class RouteInfo:
    """One registered route and method, as served: what `scope["route"]` holds once matched.

    `path` is the template (`/items/{id:int}`), which tracing reports as `http.route`.
    """

    path: str
    method: str
    """The HTTP method, or "WEBSOCKET"."""
    endpoint: Any
    handler: Handler = field(repr=False)
    spec: EndpointSpec | None = None
    """What the endpoint takes and answers (None for a WebSocket route)."""
    name: str | None = None

    @property
    def path_format(self) -> str:
        """The path template (the name OpenTelemetry's ASGI instrumentation reads)."""
        return self.path


@dataclass(slots=True)
class WebSocketRoute:
    """A WebSocket route (table entry form of `@app.websocket`)."""

    path: str
    endpoint: Any
    name: str | None = None


@dataclass(slots=True)
class Mount:
    """A sub-application served below `prefix` (table entry form of `app.mount`)."""

    prefix: str
    app: ASGIApp
    name: str | None = None


@dataclass(slots=True)
class _Entry:
    """One path: its pattern, its HTTP handlers by method, its WebSocket handler."""

    pattern: _Pattern
    http: dict[str, RouteInfo] = field(default_factory=dict)
    websocket: RouteInfo | None = None


@dataclass(slots=True)
class _MountEntry:
    """A sub-app below `prefix`: `serve` gives it the rest of the path, `root_path` extended."""

    prefix: str
    app: ASGIApp
    name: str | None

    def serve(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """Run the sub-app for `scope`, on a copy of it that starts below the prefix."""
        prefix = self.prefix
        child = dict(scope)
        child["root_path"] = scope.get("root_path", "") + prefix
        child["path"] = scope["path"][len(prefix) :] or "/"
        raw_path = scope.get("raw_path")
        if raw_path is not None and raw_path.startswith(prefix.encode()):
            child["raw_path"] = raw_path[len(prefix) :] or b"/"
        return self.app(child, receive, send)


@dataclass(slots=True)
class Match:
    """The outcome of matching a scope: a handler, or why there is none."""

    handler: Handler | None
    path_params: dict[str, Any]
    route: RouteInfo | None = None
    allow: str = ""  # set (with handler None) when the path exists but not for this method
    mount: _MountEntry | None = None
    upgrade: bool = False  # the path serves WebSocket handshakes (HTTP GET there needs Upgrade)


class Router:
    """Holds the route table and matches requests against it."""

    def __init__(self) -> None:
        self._static: dict[str, _Entry] = {}
        self._buckets: dict[str, list[_Entry]] = {}
        self._wild: list[_Entry] = []
        self._by_path: dict[str, _Entry] = {}
        self._mounts: list[_MountEntry] = []
        self._names: dict[str, tuple[_Pattern | None, str]] = {}

    # registration -------------------------------------------------------

    def _entry(self, path: str) -> _Entry:
        entry = self._by_path.get(path)
        if entry is None:
            entry = self._by_path[path] = _Entry(_Pattern(path))
            if entry.pattern.regex is None:
                self._static[path] = entry
            else:
                first = _first_segment(path)
                if first is None:
                    self._wild.append(entry)
                else:
                    self._buckets.setdefault(first, []).append(entry)
        return entry

    def _name(self, name: str | None, pattern: _Pattern | None, prefix: str = "") -> None:
        if name is None:
            return
        if name in self._names:
            raise ConfigurationError(f"route name {name!r} is used twice; names must be unique")
        self._names[name] = (pattern, prefix)

    def add_http(
        self,
        path: str,
        methods: Iterable[str],
        handler: Handler,
        *,
        name: str | None,
        endpoint: Any,
        spec: EndpointSpec | None = None,
    ) -> None:
        """Serve `methods` on `path` with `handler` (HEAD comes with GET)."""
        entry = self._entry(path)
        for method in methods:
            method = method.upper()
            if method in entry.http:
                raise ConfigurationError(f"{method} {path} is registered twice")
            entry.http[method] = RouteInfo(path, method, endpoint, handler, spec)
        if "GET" in entry.http and "HEAD" not in entry.http:
            entry.http["HEAD"] = entry.http["GET"]
        self._name(name, entry.pattern)

    def add_websocket(self, path: str, handler: Handler, *, name: str | None, endpoint: Any) -> None:
        """Serve WebSocket connections on `path` with `handler`."""
        entry = self._entry(path)
        if entry.websocket is not None:
            raise ConfigurationError(f"WebSocket route {path} is registered twice")
        entry.websocket = RouteInfo(path, "WEBSOCKET", endpoint, handler)
        self._name(name, entry.pattern)

    def mount(self, prefix: str, app: ASGIApp, *, name: str | None = None) -> None:
        """Serve `app` below `prefix`; it sees the rest of the path, `root_path` extended."""
        prefix = "/" + prefix.strip("/")
        if prefix == "/":
            raise ConfigurationError("mount a sub-app below a prefix such as '/static', not '/'")
        self._mounts.append(_MountEntry(prefix, app, name))
        self._mounts.sort(key=lambda m: len(m.prefix), reverse=True)
        self._name(name, None, prefix)

    def name_path(self, path: str, name: str | None) -> None:
        """Name the route registered at `path` (for `url_path_for`); None leaves it unnamed."""
        entry = self._by_path[path]
        self._name(name, entry.pattern)
        if name is not None:
            for route in (*entry.http.values(), entry.websocket):
                if route is not None and route.name is None:
                    route.name = name

    def is_named(self, name: str) -> bool:
        """Whether a route or mount is called `name` already."""
        return name in self._names

    # matching -----------------------------------------------------------

    def _candidates(self, path: str) -> Iterator[tuple[_Entry, dict[str, Any]]]:
        """Every entry whose pattern matches `path`, static first, then in registration order."""
        entry = self._static.get(path)
        if entry is not None:
            yield entry, {}
        slash = path.find("/", 1)
        first = path[1:] if slash == -1 else path[1:slash]
        for group in (self._buckets.get(first, ()), self._wild):
            for entry in group:
                params = entry.pattern.match(path)
                if params is not None:
                    yield entry, params

    def match_http(self, method: str, path: str) -> tuple[RouteInfo | None, dict[str, Any]]:
        """The route and path parameters for a request, or (None, {}) to fall back on `match`."""
        entry = self._static.get(path)
        if entry is not None:  # the commonest case, without a generator
            route = entry.http.get(method)
            if route is not None:
                return route, {}
        # what `_candidates` yields after the static entry, without a generator, and without
        # matching the paths of entries that do not serve the method
        slash = path.find("/", 1)
        bucket = self._buckets.get(path[1:] if slash == -1 else path[1:slash])
        if bucket is not None:
            for entry in bucket:
                route = entry.http.get(method)
                if route is not None:
                    params = entry.pattern.match(path)
                    if params is not None:
                        return route, params
        for entry in self._wild:
            route = entry.http.get(method)
            if route is not None:
                params = entry.pattern.match(path)
                if params is not None:
                    return route, params
        return None, {}

    def match(self, scope_type: str, method: str, path: str) -> Match:
        """Find the handler for a request or a WebSocket handshake.

        The first route that matches the path and serves the method wins; when routes match
        the path but none serves the method, the answer is 405 with their methods in `allow`.
        """
        allowed: set[str] = set()
        upgrade = False
        for entry, params in self._candidates(path):
            if scope_type == "http":
                route = entry.http.get(method)
                if route is not None:
                    return Match(route.handler, params, route)
                allowed.update(entry.http)
                if entry.websocket is not None:
                    upgrade = True
                    allowed.update(("GET", "HEAD"))
            elif entry.websocket is not None:
                return Match(entry.websocket.handler, params, entry.websocket)
        for mount in self._mounts:
            if path == mount.prefix or path.startswith(mount.prefix + "/"):
                return Match(None, {}, mount=mount)
        return Match(None, {}, allow=", ".join(sorted(allowed)), upgrade=upgrade)

    # introspection ------------------------------------------------------

    def url_path_for(self, name: str, /, **params: Any) -> str:
        """The path of the route called `name`, with `params` filled in.

        For a mount, pass `path=` for the part below its prefix.
        """
        try:
            pattern, prefix = self._names[name]
        except KeyError:
            raise ConfigurationError(f"no route is named {name!r}") from None
        if pattern is None:
            rest = str(params.pop("path", "")).lstrip("/")
            if params:
                raise ConfigurationError(f"mount {name!r} takes only path=, got {sorted(params)}")
            return f"{prefix}/{rest}"
        return pattern.build(params)

    def static_http(self) -> dict[str, dict[str, RouteInfo]]:
        """The HTTP routes of each path without parameters, by method (HEAD with GET's route
        where it has none of its own): what `match_http` answers for those paths first."""
        return {path: dict(entry.http) for path, entry in self._static.items() if entry.http}

    def routes(self) -> list[RouteInfo]:
        """Every route and method as served (HEAD only where it has its own endpoint), in
        registration order: the paths, endpoints and `EndpointSpec`s documents are made from."""
        found: list[RouteInfo] = []
        for entry in self._by_path.values():
            found.extend(
                route for method, route in entry.http.items() if method != "HEAD" or route.method == "HEAD"
            )
            if entry.websocket is not None:
                found.append(entry.websocket)
        return found

    def table(self) -> list[tuple[str, str, str]]:
        """Every route as (methods, path, endpoint), in registration order, mounts last."""
        rows = []
        for path, entry in self._by_path.items():
            methods = [m for m in entry.http if m != "HEAD" or "GET" not in entry.http]
            if methods:
                endpoint = entry.http[methods[0]].endpoint
                rows.append((",".join(sorted(methods)), path, _describe(endpoint)))
            if entry.websocket is not None:
                rows.append(("WEBSOCKET", path, _describe(entry.websocket.endpoint)))
        for mount in self._mounts:
            rows.append(("MOUNT", mount.prefix + "/*", _describe(mount.app)))
        return rows


def _describe(endpoint: Any) -> str:
    target = endpoint if hasattr(endpoint, "__qualname__") else type(endpoint)
    return f"{target.__module__}.{target.__qualname__}"

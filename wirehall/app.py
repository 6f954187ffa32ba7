"""`Wirehall`: the ASGI application, its lifespan, route registration and error handling.

Past ~400 lines on purpose: it is the one class that ties the layers together (settings,
container, routes, middleware stack, lifespan, error answers), and each part is short.
What could stand alone has moved out: the route decorators and groups
(`wirehall.registrar`), the HTTP fast path (`wirehall.http._fast`), matching and mounts
(`wirehall.routing`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec

from wirehall.apidocs import ApiDocs
from wirehall.backplane import backplane_from_url
from wirehall.backplane.base import Backplane
from wirehall.config import Settings
from wirehall.connection import Connection
from wirehall.di import Container
from wirehall.errors import ConfigurationError, HTTPError
from wirehall.events import (
    AppStarted,
    AppStopping,
    ErrorRaised,
    EventBus,
    RequestCompleted,
    RequestStarted,
)
from wirehall.http._fast import (
    LENGTH_HEADERS,
    PLAIN_ROUTE,
    TEXT_PLAIN,
    DefaultHeaders,
    Encode,
    Finisher,
    PlainRoute,
    prepare,
)
from wirehall.http.browser_client import CLIENT_PATH, client_endpoint
from wirehall.http.controller import HTTPController, build_http_endpoint, controller_methods
from wirehall.http.request import DEFAULT_MAX_BODY_SIZE, Request
from wirehall.http.response import JSONResponse, Response, error_response
from wirehall.http.staticfiles import StaticFiles
from wirehall.http.templates import Templates
from wirehall.logcontext import enter as enter_log_context
from wirehall.logcontext import is_enabled as log_context_enabled
from wirehall.metrics import DEFAULT_PATH as DEFAULT_METRICS_PATH
from wirehall.metrics import HttpMeter, Metrics, metrics_path_from_env
from wirehall.params import RequestValidationError
from wirehall.registrar import Registrar, RouteGroup
from wirehall.routing import Handler, Mount, Route, RouteInfo, Router, WebSocketRoute, compile_path
from wirehall.security.connection_limit import ConnectionLimitMiddleware
from wirehall.security.headers import SecurityHeadersMiddleware
from wirehall.security.hosts import HostAllowlist, TrustedHostMiddleware, allowed_hosts_from_env
from wirehall.security.origin import WebSocketOriginMiddleware
from wirehall.security.same_site import SAME_SITE_ATTRIBUTE, SameSiteGuard
from wirehall.types import ASGIApp, Message, Receive, Scope, Send
from wirehall.websocket.controller import build_websocket_endpoint
from wirehall.websocket.handler import WebSocketHandler
from wirehall.websocket.service import WebSocketService

__all__ = ["Middleware", "RouteGroup", "Wirehall"]

logger = logging.getLogger(__name__)

DEFAULT_WEBSOCKET_MESSAGE_SIZE = 1024 * 1024
"""What `max_websocket_message_size` counts for a route that does not say (1 MiB)."""

F = TypeVar("F", bound=Callable[..., Any])
_Inline = tuple[
    RouteInfo,
    Callable[[], Awaitable[Any]],
    int,
    Any,
    Callable[[Any, Scope, Receive, Send], Awaitable[None]],
    Callable[[Exception, Scope, Receive, Send], Awaitable[int]],
]
"""A route `__call__` runs itself: the route, then its `PlainRoute`'s endpoint, status,
text_tails, rest and fail."""
Hook = Callable[[], Awaitable[None] | None]
ExceptionHandler = Callable[[Any, BaseException], Awaitable[Response] | Response]


@dataclass(frozen=True)
class Middleware:
    """A middleware class and its options: `Middleware(CORSMiddleware, allow_origins=[...])`."""

    cls: Callable[..., ASGIApp]
    options: dict[str, Any] = field(default_factory=dict)

    def __init__(self, cls: Callable[..., ASGIApp], /, **options: Any) -> None:
        object.__setattr__(self, "cls", cls)
        object.__setattr__(self, "options", options)


class Wirehall(Registrar):
    """The application: an ASGI 3 callable that owns its container, event bus and services.

    Args:
        debug: put tracebacks in 500 responses (default: env WIREHALL_DEBUG, off).
        backplane: URL of the WebSocket backplane (default: env WIREHALL_BACKPLANE or memory://),
            or a ready Backplane object.
        middleware: plain ASGI middleware, outermost first.
        routes: a route table (Route, WebSocketRoute, Mount entries).
        templates: a directory of Jinja2 templates (autoescaped) for `controller.render`.
        max_body_size: request bodies larger than this get 413.
        allowed_origins: origins (besides the app's own) allowed to open WebSockets;
            `["*"]` allows any. Handshakes from other origins are refused (403).
        allowed_hosts: host names the app answers for (`example.com`, `*.example.com`,
            `[::1]`; `["*"]` allows any); other `Host` values get 400 and a refused
            handshake, and are never taken as the app's own origin. Default: env
            WIREHALL_ALLOWED_HOSTS, else any (`wirehall run` on a loopback address sets
            loopback names in that variable).
        security_headers: add nosniff / frame options / referrer policy / CSP (HTML) headers.
        websockets: a ready WebSocketService (to set queue sizes, policies, heartbeats).
        max_connections_per_address: at most this many WebSocket connections open at once
            from one client address (`scope["client"]`); the next handshake gets HTTP 429.
            0 (the default) is no cap: clients behind one proxy or NAT share an address.
        json_enc_hook: called by msgspec for each value it cannot encode itself in what an
            endpoint returns (a Pydantic model, your own class): return something it can
            (`lambda obj: obj.model_dump()`). Without it such a return is a 500, logged
            with the type at fault.
        openapi_url, asyncapi_url, docs_url: where the OpenAPI 3.1 document of the HTTP
            routes, the AsyncAPI 3.0 document of the WebSocket routes and the docs page
            rendering both are served (defaults `/openapi.json`, `/asyncapi.json`, `/docs`;
            None turns one off). Added at startup; a route of the app's own at the same
            path and method wins.
        title, version: the `info` of both documents.
        metrics: serve Prometheus metrics at `/metrics` (True) or at the path given (see
            `enable_metrics`; needs `wirehall[metrics]`). Default: env WIREHALL_METRICS
            (`wirehall run --metrics` sets it), else off.
    """

    def __init__(
        self,
        *,
        debug: bool | None = None,
        backplane: str | Backplane | None = None,
        middleware: Sequence[Middleware] = (),
        routes: Iterable[Route | WebSocketRoute | Mount] = (),
        templates: str | os.PathLike[str] | None = None,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        allowed_origins: Iterable[str] = (),
        allowed_hosts: Iterable[str] | None = None,
        security_headers: bool = True,
        websockets: WebSocketService | None = None,
        max_connections_per_address: int = 0,
        json_enc_hook: Callable[[Any], Any] | None = None,
        openapi_url: str | None = "/openapi.json",
        asyncapi_url: str | None = "/asyncapi.json",
        docs_url: str | None = "/docs",
        title: str = "wirehall app",
        version: str = "0.1.0",
        metrics: bool | str = False,
    ) -> None:
        if (
            isinstance(max_connections_per_address, bool)
            or not isinstance(max_connections_per_address, int)
            or max_connections_per_address < 0
        ):
            raise ConfigurationError(
                f"max_connections_per_address={max_connections_per_address!r}; use a whole number, "
                "0 for no cap"
            )
        settings = Settings.from_env()
        self.debug = settings.debug if debug is None else debug
        self.max_body_size = max_body_size
        self.container = Container(connection_types=(Connection,))
        self._encode: Encode | None = (
            msgspec.json.Encoder(enc_hook=json_enc_hook).encode if json_enc_hook is not None else None
        )
        self._events = EventBus()
        self.router = Router()
        self.api_docs = ApiDocs(
            self.router.routes,
            title=title,
            version=version,
            openapi_url=openapi_url,
            asyncapi_url=asyncapi_url,
            docs_url=docs_url,
        )
        self._api_docs_added = False
        self.templates = Templates(templates) if templates is not None else None
        self.allowed_origins = tuple(allowed_origins)
        self.allowed_hosts = None if allowed_hosts is None else tuple(allowed_hosts)
        self._websocket_message_sizes: list[int] = []
        self._log_context = False
        self._mounted_apps: list[ASGIApp] = []
        self.max_connections_per_address = max_connections_per_address
        self._origin_check: WebSocketOriginMiddleware | None = None
        # `@same_site` / `@json_only` endpoints: the origin rule is the WebSocket check's
        self._same_site = SameSiteGuard(self._origin_allows)
        self.security_headers = security_headers
        self._headers: SecurityHeadersMiddleware | None = None
        self._finish: Finisher | None = None
        if security_headers:
            # applied to each Response before it is sent (cheaper than wrapping `send`);
            # mounted apps, whose responses we never see, get a wrapped `send` instead
            self._headers = SecurityHeadersMiddleware(self._route)
            self._finish = DefaultHeaders(self._headers)
        self._middleware = list(middleware)
        self._startup_hooks: list[Hook] = []
        self._shutdown_hooks: list[Hook] = []
        self._exception_handlers: dict[type[BaseException], ExceptionHandler] = {}
        # the middleware stack around `_route`, built at startup
        self._asgi: ASGIApp = self._route
        self._stack_built = False
        self._websocket_entry: ASGIApp = self._dispatch_websocket
        self._started = False
        self._observed_requests = False
        self._plain_requests = False
        # parameterless endpoints that `__call__` runs itself: {path: {method: parts}}
        self._inline: dict[str, dict[str, _Inline]] = {}
        self._inline_hosts: TrustedHostMiddleware | None = None  # the Host check it makes first
        self.events.watch(self._watch_requests)
        self._start_lock = asyncio.Lock()
        self._metrics_path = ""
        self._http_meter: HttpMeter | None = None
        if websockets is None:
            chosen = backplane if backplane is not None else settings.backplane
            websockets = WebSocketService(
                backplane_from_url(chosen) if isinstance(chosen, str) else chosen,
                events=self.events,
            )
        elif websockets.events is None:
            websockets.events = self.events  # so presence and connection events reach the app
        self.websockets = websockets
        self.container.instance(Wirehall, self)
        self.container.instance(Container, self.container)
        self.container.instance(EventBus, self.events)
        self.container.instance(type(websockets), websockets)
        self.metrics: Metrics | None = None
        self.add_routes(routes)
        if metrics:
            self.enable_metrics(path=metrics if isinstance(metrics, str) else DEFAULT_METRICS_PATH)

    @property
    def events(self) -> EventBus:
        """The app's event bus: one per app, for its whole life (the app follows its
        subscriptions to know which requests are observed)."""
        return self._events

    # registration -------------------------------------------------------

    def _register_http(
        self,
        path: str,
        endpoint: Any,
        methods: Sequence[str] | None,
        name: str | None,
        status_code: int | None = None,
    ) -> None:
        _, _, converters = compile_path(path)
        if inspect.isclass(endpoint) and issubclass(endpoint, HTTPController):
            chosen = [m.upper() for m in methods] if methods else controller_methods(endpoint)
        else:
            chosen = [m.upper() for m in methods] if methods else ["GET"]
        for method in chosen:
            if method == "HEAD" and "GET" in chosen:
                continue
            handler, spec = build_http_endpoint(
                endpoint,
                method,
                self.container,
                converters,
                self._finish,
                self._same_site,
                self._http_error,
                status_code=status_code,
                encode=self._encode,
            )
            self.router.add_http(path, [method], handler, name=None, endpoint=endpoint, spec=spec)
        self.router.name_path(path, self._auto_name(endpoint, name))

    def _register_websocket(self, path: str, endpoint: Any, name: str | None) -> None:
        _, _, converters = compile_path(path)
        handler = build_websocket_endpoint(endpoint, self.container, converters)
        self.router.add_websocket(path, handler, name=None, endpoint=endpoint)
        size = getattr(endpoint, "max_message_size", None) if inspect.isclass(endpoint) else None
        self._websocket_message_sizes.append(
            size if isinstance(size, int) else DEFAULT_WEBSOCKET_MESSAGE_SIZE
        )
        self.router.name_path(path, self._auto_name(endpoint, name))

    def add_document_routes(self) -> None:
        """Add the routes of the API documents and the docs page (startup does it; call it
        to list them or `url_path_for` them before). Once only; the app's own routes win."""
        if self._api_docs_added:
            return
        self._api_docs_added = True
        taken = {route.path for route in self.router.routes() if route.method == "GET"}
        for path, endpoint, name in self.api_docs.endpoints:
            if path in taken:
                logger.warning("GET %s is the app's own route, not the API document served there", path)
                continue
            self._register_http(path, endpoint, ["GET"], None if self.router.is_named(name) else name)

    def enable_metrics(self, path: str = DEFAULT_METRICS_PATH) -> Metrics:
        """Serve Prometheus metrics at `GET path` (once only; before the app starts).

        HTTP requests by route template, method and status, WebSocket connections, rooms,
        messages, outbox depth, evictions, fan-out time and backplane errors: see
        docs/metrics.md. Under `wirehall run --workers N` every worker's are summed.

        Raises:
            MissingDependencyError: prometheus-client is not installed (`wirehall[metrics]`).
            ConfigurationError: the app has started, or metrics are on already at another path.
        """
        if self.metrics is not None:
            if path != self._metrics_path:
                raise ConfigurationError(
                    f"metrics are served at {self._metrics_path!r} already; enable them once"
                )
            return self.metrics
        if self._stack_built:
            raise ConfigurationError("metrics cannot be turned on once the app has started serving")
        if not path.startswith("/"):
            raise ConfigurationError(f"metrics path {path!r} must start with '/', e.g. /metrics")
        metrics = Metrics()
        metrics.observe(self.events, self.websockets)
        self._register_http(
            path, metrics.expose, ["GET"], None if self.router.is_named("metrics") else "metrics"
        )
        self.api_docs.exclude(metrics.expose)  # not an operation of the app's API
        self._startup_hooks.append(metrics.start)
        self._shutdown_hooks.insert(0, metrics.stop)  # hooks run in reverse: this one last
        self.metrics = metrics
        self._metrics_path = path
        self._http_meter = metrics.http
        return metrics

    def _auto_name(self, endpoint: Any, name: str | None) -> str | None:
        if name is not None:
            return name
        auto = getattr(endpoint, "__name__", None)
        return auto if auto and not self.router.is_named(auto) else None

    @property
    def max_websocket_message_size(self) -> int:
        """The largest message (bytes) any WebSocket route here takes: the server's frame limit.

        A `WebSocketController` route counts with its `max_message_size`, a function endpoint
        with 1 MiB, a mounted Wirehall app with its own answer; with no WebSocket route, 1 MiB.
        Other mounted apps are not asked: give the server a limit yourself if they need more.
        """
        sizes = list(self._websocket_message_sizes)
        for app in self._mounted_apps:
            if isinstance(app, Wirehall) and app._websocket_message_sizes:
                sizes.append(app.max_websocket_message_size)
        return max(sizes, default=DEFAULT_WEBSOCKET_MESSAGE_SIZE)

    def add_routes(self, routes: Iterable[Route | WebSocketRoute | Mount]) -> None:
        """Register a table of routes."""
        for entry in routes:
            if isinstance(entry, Route):
                self._register_http(entry.path, entry.endpoint, entry.methods, entry.name, entry.status_code)
            elif isinstance(entry, WebSocketRoute):
                self._register_websocket(entry.path, entry.endpoint, entry.name)
            elif isinstance(entry, Mount):
                self.mount(entry.prefix, entry.app, name=entry.name)
            else:
                raise ConfigurationError(f"{entry!r} is not a Route, WebSocketRoute or Mount")

    def group(self, prefix: str, *, name_prefix: str = "") -> RouteGroup:
        """Routes under a common path prefix: `api = app.group("/api")`, then `@api.get(...)`."""
        return RouteGroup(self, prefix, name_prefix)

    def mount(self, prefix: str, app: ASGIApp, *, name: str | None = None) -> None:
        """Serve another ASGI app (a sub-app, static files) below `prefix`."""
        self.router.mount(prefix, app, name=name)
        self._mounted_apps.append(app)

    def static(
        self,
        prefix: str,
        directory: str | os.PathLike[str],
        *,
        name: str = "static",
        html: bool = False,
    ) -> None:
        """Serve the files of `directory` below `prefix` (path traversal is refused)."""
        self.mount(prefix, StaticFiles(directory, html=html), name=name)

    def serve_client(self, path: str = CLIENT_PATH) -> None:
        """Serve `wirehall.js`, the browser client (an ES module), at `path` (`/wirehall.js`).

        A page imports it: `import { WirehallSocket } from "/wirehall.js"`. It answers with an
        ETag and `Cache-Control: no-cache`, so browsers keep it and revalidate (304).
        """
        name = None if self.router.is_named("wirehall_js") else "wirehall_js"
        endpoint = client_endpoint()
        self._register_http(path, endpoint, ["GET"], name)
        self.api_docs.exclude(endpoint)  # an asset, not part of the app's API

    def add_middleware(self, cls: Callable[..., ASGIApp], /, **options: Any) -> None:
        """Add ASGI middleware (outside the ones given before). Only before the app starts."""
        if self._stack_built:
            raise ConfigurationError("middleware cannot be added once the app has started serving")
        self._middleware.insert(0, Middleware(cls, **options))

    def on_startup(self, hook: F) -> F:
        """Run `hook` (sync or async) at startup, after the container's singletons are built."""
        self._startup_hooks.append(hook)
        return hook

    def on_shutdown(self, hook: F) -> F:
        """Run `hook` at shutdown, before the container closes its services."""
        self._shutdown_hooks.append(hook)
        return hook

    def exception_handler(self, exc_type: type[BaseException]) -> Callable[[F], F]:
        """Answer exceptions of `exc_type` with `handler(request, exc) -> Response`."""

        def decorator(handler: F) -> F:
            self._exception_handlers[exc_type] = handler
            return handler

        return decorator

    def url_path_for(self, name: str, /, **params: Any) -> str:
        """The path of the route called `name`."""
        return self.router.url_path_for(name, **params)

    # lifecycle ----------------------------------------------------------

    def _build_stack(self) -> ASGIApp:
        """The middleware, outermost first, around the router (`_route`)."""
        entries = self.allowed_hosts if self.allowed_hosts is not None else allowed_hosts_from_env()
        hosts = HostAllowlist(entries) if entries is not None else None
        # the origin check only concerns handshakes, so it wraps the WebSocket branch alone
        self._websocket_entry = self._origin_check = WebSocketOriginMiddleware(
            self._dispatch_websocket, allowed_origins=self.allowed_origins, allowed_hosts=hosts
        )
        if self.max_connections_per_address:
            self._websocket_entry = ConnectionLimitMiddleware(
                self._websocket_entry, max_per_address=self.max_connections_per_address
            )
        app: ASGIApp = self._route
        for middleware in reversed(self._middleware):
            app = middleware.cls(app, **middleware.options)
        if hosts is not None and not hosts.allows_any:
            guard = TrustedHostMiddleware(app, hosts)  # outermost: nothing runs for a foreign Host
            if app == self._route:  # nothing else around the router: `__call__` asks it itself
                self._inline_hosts = guard
            app = guard
        return app

    def _origin_allows(self, origin: str, scope: Scope) -> bool:
        check = self._origin_check
        return check is not None and check.allows(origin, scope)  # built at startup, before requests

    async def startup(self) -> None:
        """Start services, build singletons, run startup hooks (the lifespan does this)."""
        async with self._start_lock:
            if self._started:
                return
            if self.metrics is None and not self._stack_built:
                env_path = metrics_path_from_env()
                if env_path is not None:
                    self.enable_metrics(path=env_path)
            self.add_document_routes()
            if not self._stack_built:
                self._asgi = self._build_stack()
                self._stack_built = True
            self._log_context = log_context_enabled()  # logging is set up before the app starts
            for route in self.router.routes():
                # endpoint marks are read now: routes without one skip the access check
                prepare(route.handler, _same_site_marked)
            try:
                await self.container.start()
                await self.websockets.start()
                for hook in self._startup_hooks:
                    result = hook()
                    if inspect.isawaitable(result):
                        await result
            except BaseException:
                # close what was opened before the failure, then let the server report it
                try:
                    await self.websockets.stop()
                finally:
                    await self.container.aclose()
                raise
            self._started = True
            self._watch_requests()  # with the log context, metrics and stack now known
        await self.events.publish(AppStarted())
        logger.info("wirehall app started (%d routes)", len(self.router.table()))

    async def shutdown(self) -> None:
        """Close every WebSocket (1001), run shutdown hooks, close services."""
        if not self._started:
            return
        await self.events.publish(AppStopping())
        try:
            await self.websockets.stop()
            for hook in reversed(self._shutdown_hooks):
                result = hook()
                if inspect.isawaitable(result):
                    await result
        finally:
            self._started = False
            self._inline = {}
            await self.container.aclose()
        logger.info("wirehall app stopped")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    logger.exception("startup failed")
                    await send(
                        {
                            "type": "lifespan.startup.failed",
                            "message": f"{type(exc).__name__}: {exc}",
                        }
                    )
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await self.shutdown()
                except Exception as exc:
                    logger.exception("shutdown failed")
                    await send(
                        {
                            "type": "lifespan.shutdown.failed",
                            "message": f"{type(exc).__name__}: {exc}",
                        }
                    )
                    return
                await send({"type": "lifespan.shutdown.complete"})
                return

    # serving ------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self
        if scope["type"] == "http":
            by_method = self._inline.get(scope["path"])
            if by_method is not None:
                inline = by_method.get(scope["method"])
                if inline is not None and (self._inline_hosts is None or self._inline_hosts.allows(scope)):
                    # what `_route` and the route's `plain_endpoint` handler do, without their
                    # frames: the same messages (tests/http/test_fast.py compares them; only a
                    # debug 500's traceback names this frame instead of the handler's)
                    route, endpoint, status, text_tails, rest, fail = inline
                    scope["route"] = route
                    scope["path_params"] = {}
                    try:
                        value = await endpoint()
                        if text_tails is not None and type(value) is str:
                            body = value.encode()
                            size = len(body)
                            await send(
                                {
                                    "type": "http.response.start",
                                    "status": status,
                                    "headers": [
                                        LENGTH_HEADERS[size]
                                        if size < 1024
                                        else (b"content-length", b"%d" % size),
                                        TEXT_PLAIN,
                                        *text_tails[scope.get("scheme") == "https"],
                                    ],
                                }
                            )
                            await send(
                                {
                                    "type": "http.response.body",
                                    "body": b"" if scope["method"] == "HEAD" else body,
                                }
                            )
                        else:
                            await rest(value, scope, receive, send)
                    except Exception as exc:  # noqa: BLE001 - answered as the route's handler would
                        await fail(exc, scope, receive, send)
                    return
        if not self._started:
            if scope["type"] == "lifespan":
                await self._lifespan(receive, send)
                return
            await self.startup()
        await self._asgi(scope, receive, send)  # the middleware, then `_route`

    def _route(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """The innermost app of the middleware stack: the endpoint's awaitable for `scope`.

        Not a coroutine itself: it returns the handler's, so that a request (and a
        WebSocket, for its whole life) keeps no frame of the router alive. The HTTP
        handlers answer what they raise themselves (`_http_error`).
        """
        kind = scope["type"]
        if kind == "http":
            route, params = self.router.match_http(scope["method"], scope["path"])
            handler: Handler
            if route is None:
                handler = self._unmatched_http
            else:
                scope["route"] = route  # what tracing reads for `http.route`
                handler = route.handler
            scope["path_params"] = params
            if self._plain_requests:  # no log context, no request events, no metrics
                return handler(scope, receive, send)
            if self._log_context:
                enter_log_context(scope, route.path if route is not None else None)
            if self._observed_requests:
                return self._observed(handler, scope, receive, send)
            if self._http_meter is not None:
                template = route.path if route is not None else None
                return self._http_meter.serve(handler, template, scope, receive, send)
            return handler(scope, receive, send)
        if kind == "websocket":
            return self._websocket_entry(scope, receive, send)
        if kind == "lifespan":
            return self._lifespan(receive, send)
        return _ignored(kind)

    def _watch_requests(self) -> None:
        """Whether requests are observed (events), logged with a context or metered, and so
        which routes `__call__` may answer itself: asked at startup and again whenever the
        event bus's subscriptions change (`EventBus.watch`)."""
        self._observed_requests = self.events.wants(RequestStarted) or self.events.wants(RequestCompleted)
        self._plain_requests = not (
            self._observed_requests or self._log_context or self._http_meter is not None
        )
        self._inline = self._inline_routes() if self._plain_requests else {}

    def _inline_routes(self) -> dict[str, dict[str, _Inline]]:
        """The routes `__call__` may run itself: parameterless endpoints on paths without
        parameters that no access rule concerns, once the app has started, when there is no
        middleware (which must see every request) but the app's own Host check, which
        `__call__` makes itself (a refused Host goes through the middleware)."""
        table: dict[str, dict[str, _Inline]] = {}
        if not self._started or not (self._asgi == self._route or self._asgi is self._inline_hosts):
            return table
        for path, by_method in self.router.static_http().items():
            for method, route in by_method.items():
                plain: PlainRoute | None = getattr(route.handler, PLAIN_ROUTE, None)
                if plain is not None and not plain.guarded:
                    table.setdefault(path, {})[method] = (
                        route,
                        plain.endpoint,
                        plain.status,
                        plain.text_tails,
                        plain.rest,
                        plain.fail,
                    )
        return table

    def _dispatch_websocket(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        match = self.router.match("websocket", "", scope["path"])
        if self._log_context:
            enter_log_context(scope, match.route.path if match.route is not None else None)
        if match.handler is not None:
            scope["route"] = match.route
            scope["path_params"] = match.path_params
            return match.handler(scope, receive, send)
        if match.mount is not None:
            return match.mount.serve(scope, receive, send)
        return WebSocketHandler(scope, receive, send).refuse(404)

    async def _unmatched_http(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = self.router.match("http", scope["method"], scope["path"])
        if match.mount is not None:
            if self._headers is not None:
                send = self._headers.wrap_send(send, https=scope.get("scheme") == "https")
            try:
                await match.mount.serve(scope, receive, send)
            except Exception as exc:  # noqa: BLE001 - the boundary that runs the mounted app
                await self._http_error(exc, scope, receive, send)
        elif match.upgrade and scope["method"] in ("GET", "HEAD"):
            await self._send_error_response(
                error_response(426, "this path takes WebSocket connections", {"Upgrade": "websocket"}),
                scope,
                receive,
                send,
            )
        elif match.allow:
            await self._send_error_response(
                error_response(405, headers={"Allow": match.allow}), scope, receive, send
            )
        else:
            await self._send_error_response(error_response(404), scope, receive, send)

    async def _observed(
        self, handler: Callable[..., Awaitable[None]], scope: Scope, receive: Receive, send: Send
    ) -> None:
        method, path = scope["method"], scope["path"]
        started = time.perf_counter()
        status = 500
        await self.events.publish(RequestStarted(method, path))

        async def watching_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await handler(scope, receive, watching_send)
        except Exception as exc:  # noqa: BLE001 - the boundary that runs user code
            status = await self._http_error(exc, scope, receive, watching_send)
        finally:
            route = scope.get("route")
            template = route.path if isinstance(route, RouteInfo) else None
            duration = time.perf_counter() - started
            if self._http_meter is not None:
                self._http_meter.record(template, method, status, duration)
            await self.events.publish(RequestCompleted(method, path, status, duration, template))

    async def _http_error(self, exc: Exception, scope: Scope, receive: Receive, send: Send) -> int:
        """Answer an exception raised by user code; returns the status sent."""
        handler = self._find_exception_handler(type(exc))
        if handler is not None:
            try:
                result = handler(Request(scope, receive), exc)
                response = await result if inspect.isawaitable(result) else result
            except Exception as inner:  # noqa: BLE001 - a failing exception handler gives a 500
                exc = inner
            else:
                return await self._send_error_response(response, scope, receive, send)
        if isinstance(exc, RequestValidationError):
            body = {"error": exc.detail, "detail": exc.errors}
            return await self._send_error_response(
                JSONResponse(body, exc.status, exc.headers or None), scope, receive, send
            )
        if isinstance(exc, HTTPError):
            return await self._send_error_response(
                error_response(exc.status, exc.detail, exc.headers), scope, receive, send
            )
        logger.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"), exc_info=exc)
        await self.events.publish(ErrorRaised(exc, scope.get("path", ""), "http"))
        detail = "".join(traceback.format_exception(exc)) if self.debug else "Internal Server Error"
        return await self._send_error_response(error_response(500, detail), scope, receive, send)

    async def _send_error_response(
        self, response: Response, scope: Scope, receive: Receive, send: Send
    ) -> int:
        if self._finish is not None:
            self._finish(response, scope)
        try:
            await response(scope, receive, send)
        except Exception:
            logger.debug("could not send the error response for %s", scope.get("path"), exc_info=True)
        return response.status

    def _find_exception_handler(self, exc_type: type[BaseException]) -> ExceptionHandler | None:
        if not self._exception_handlers:
            return None
        for base in exc_type.__mro__:
            handler = self._exception_handlers.get(base)
            if handler is not None:
                return handler
        return None


def _same_site_marked(targets: tuple[object, ...]) -> bool:
    """Whether the app's `SameSiteGuard` has anything to check for these targets."""
    return any(getattr(target, SAME_SITE_ATTRIBUTE, None) is not None for target in targets)


async def _ignored(kind: str) -> None:
    logger.debug("ignoring an ASGI scope of type %r", kind)

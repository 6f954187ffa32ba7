"""`WebSocketController`, what users subclass, and the runner that serves it per connection.

A little over 400 lines: the controller and the runners that call its hooks belong
together (the runner checks the hooks' signatures at registration).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import typing
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from typing import Any, ClassVar, Literal

from wirehall._decoding import json_decoder
from wirehall.di import CallPlan, Container, ResolutionScope
from wirehall.errors import (
    ConfigurationError,
    WebSocketDisconnectError,
    WebSocketError,
    WebSocketStateError,
)
from wirehall.events import (
    ErrorRaised,
    EventBus,
    WebSocketConnected,
    WebSocketDisconnected,
    WebSocketMessageReceived,
)
from wirehall.logcontext import attach_connection
from wirehall.params import RequestValidationError
from wirehall.security.access import access_denied
from wirehall.types import ASGIApp, Receive, Scope, Send
from wirehall.websocket._core import ConnectionCore, FramePolicy, Incoming, Phase, Verdict
from wirehall.websocket._session import NativeSession
from wirehall.websocket.codes import CloseCode
from wirehall.websocket.handler import WebSocketHandler, WebSocketState, is_sendable_close_code
from wirehall.websocket.ratelimit import RateLimit
from wirehall.websocket.service import WebSocketService

__all__ = ["WebSocketController", "build_websocket_endpoint"]

logger = logging.getLogger(__name__)

_OPEN = Phase.OPEN
_CONNECTING = WebSocketState.CONNECTING
_ACCEPT, _INVALID, _REPLY, _CLOSE = Verdict.ACCEPT, Verdict.INVALID, Verdict.REPLY, Verdict.CLOSE


class WebSocketController(WebSocketHandler):
    """Subclass it and override the hooks; one instance serves one connection.

    Hook parameters after `self` (and the message or close code) are filled like an
    HTTP endpoint's: path parameters by name, everything else by type from the container.

    Class options:
        receives: which frames are accepted, "text", "bytes" or "any"; the other kind
            closes the connection with 1003.
        message_type: None gives `on_message` the raw str/bytes; a type (a msgspec
            Struct, a tagged Union, `typing.Any`...) decodes each message as JSON into it,
            and a message that does not fit goes to `on_invalid_message` instead.
        sends: what the controller sends (a Struct, a tagged Union of them...), for the
            app's AsyncAPI document; None says nothing. Not checked when sending.
        max_message_size: bytes (UTF-8 for text); a bigger message closes with 1009.
        rate_limit: a `RateLimit`; messages over it get an error frame and are dropped,
            and a client that keeps sending over it is closed with 1008 (see `RateLimit`).
    """

    __slots__ = ("_events",)

    receives: ClassVar[Literal["text", "bytes", "any"]] = "text"
    message_type: ClassVar[Any] = None
    sends: ClassVar[Any] = None
    max_message_size: ClassVar[int] = 65536
    rate_limit: ClassVar[RateLimit | None] = None

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        super().__init__(scope, receive, send)
        self._events: EventBus | None = getattr(scope.get("app"), "events", None)

    @property
    def events(self) -> EventBus | None:
        """The app's event bus (None outside a Wirehall app)."""
        return self._events

    # hooks ------------------------------------------------------------------------

    async def on_connect(self, *args: Any, **kwargs: Any) -> None:
        """The client asks to connect: accept (the default), or `refuse()` / raise `WebSocketError`."""
        await self.accept()

    async def on_message(self, message: Any, *args: Any, **kwargs: Any) -> None:
        """A message arrived: str / bytes, or a `message_type` value. The default ignores it."""

    async def on_disconnect(self, code: int, *args: Any, **kwargs: Any) -> None:
        """The connection closed with `code` (either side). Rooms are left right after."""

    async def on_invalid_message(self, error: str, raw: str | bytes) -> None:
        """`raw` did not decode into `message_type` (`error` says why); the default replies
        with an error frame and keeps the connection open."""
        await self.send_error(error)

    # conveniences -------------------------------------------------------------------

    @property
    def service(self) -> WebSocketService:
        """The app's `WebSocketService` (rooms, presence, broadcast)."""
        service = self._registry
        if not isinstance(service, WebSocketService):
            raise WebSocketStateError(
                "this connection is not registered with a WebSocketService; "
                "serve the controller through a Wirehall app route"
            )
        return service

    async def join(self, room: str, identity: str | None = None, *, hold: bool = False) -> None:
        """Join `room`, shown in its presence as `identity`.

        With `hold=True` the room's messages wait until `release(room, after=...)`, so that a
        history read after joining and the live messages meet exactly (see
        `WebSocketService.join`).
        """
        await self.service.join(self, room, identity or "", hold=hold)

    def release(self, room: str, *, after: int | None = None) -> None:
        """Start receiving `room` after a `join(..., hold=True)`; `after`: the last position already sent."""
        self.service.release(self, room, after=after)

    async def leave(self, room: str) -> None:
        """Leave `room` (no error when not in it)."""
        await self.service.leave(self, room)

    async def send_error(self, text: str) -> None:
        """Send `{"type": "error", "error": text}`; the connection stays open."""
        await self.send_json({"type": "error", "error": text})

    async def accept(
        self,
        subprotocol: str | None = None,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    ) -> None:
        """Accept the handshake (see `WebSocketHandler.accept`); publishes `WebSocketConnected`."""
        await super().accept(subprotocol, headers)
        events = self._events
        if events is not None and events.wants(WebSocketConnected):
            await events.publish(WebSocketConnected(self.id, self.scope.get("path", "")))


Endpoint = type[WebSocketController] | Callable[..., Awaitable[None]]


def build_websocket_endpoint(
    endpoint: Endpoint, container: Container, path_params: Collection[str]
) -> ASGIApp:
    """The ASGI app serving `endpoint` (a controller class or an async function) per connection.

    Hook and function parameters are checked now, so a bad one fails at registration.
    """
    if isinstance(endpoint, type):
        if not issubclass(endpoint, WebSocketController):
            raise ConfigurationError(
                f"WebSocket endpoint {endpoint.__qualname__} must subclass WebSocketController "
                "or be an async function"
            )
        return _ControllerRunner(endpoint, container, tuple(path_params))
    if inspect.iscoroutinefunction(endpoint):
        return _FunctionRunner(endpoint, container, tuple(path_params))
    raise ConfigurationError(
        f"WebSocket endpoint {endpoint!r} must be a WebSocketController subclass or an async function"
    )


class _Runner:
    """What the class and function runners share: the connection's life, errors and events."""

    __slots__ = ("cls", "container", "guarded")

    def __init__(
        self, cls: type[WebSocketController], container: Container, guarded: tuple[object, ...]
    ) -> None:
        self.cls = cls
        self.container = container
        self.guarded = guarded

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ws = self.cls(scope, receive, send)
        app = scope.get("app")
        service: WebSocketService | None = getattr(app, "websockets", None)
        events: EventBus | None = getattr(app, "events", None)
        task = asyncio.current_task()
        ws.run_in(task)
        try:
            await ws.receive_connect()
        except WebSocketDisconnectError:
            return  # the client left before the handshake
        for target in self.guarded:
            status = access_denied(target, scope)
            if status is not None:
                await ws.refuse(status)
                return
        if service is not None:
            service.register(ws)
            attach_connection(ws.id)  # log lines from here on name the connection
        code: int = CloseCode.NO_STATUS
        # hook arguments and request-scoped dependencies see this connection; a query value
        # that does not fit them refuses the handshake (or closes with 1008 once accepted)
        resolver = self.container.scope(ws, invalid_input=_invalid_input)
        handed_over = False
        try:
            try:
                outcome = await self._run(ws, receive, resolver, scope.get("path_params") or {})
            except asyncio.CancelledError:
                # Cancelled by the connection itself because the peer takes nothing: carry on.
                if not ws.cancelled_by_close or task is None or task.uncancel() > 0:
                    raise
                outcome = ws.close_code or CloseCode.ABNORMAL
            if outcome is None:  # a native session serves it from here, by callback
                handed_over = True
                return
            code = outcome
            if ws.core.accepted:
                await self._disconnected(ws, resolver, code)
        finally:
            if not handed_over:
                if service is not None:
                    service.unregister(ws)
                await resolver.aclose()
        if ws.core.accepted and events is not None and events.wants(WebSocketDisconnected):
            await events.publish(WebSocketDisconnected(ws.id, scope.get("path", ""), code))

    async def finish(self, ws: WebSocketController, resolver: ResolutionScope, code: int) -> None:
        """The end of a connection a native session served: `on_disconnect`, then clean up."""
        app = ws.scope.get("app")
        service: WebSocketService | None = getattr(app, "websockets", None)
        try:
            if ws.core.accepted:
                await self._disconnected(ws, resolver, code)
        finally:
            if service is not None:
                service.unregister(ws)
            await resolver.aclose()
        events: EventBus | None = getattr(app, "events", None)
        if ws.core.accepted and events is not None and events.wants(WebSocketDisconnected):
            await events.publish(WebSocketDisconnected(ws.id, ws.scope.get("path", ""), code))

    async def _run(
        self,
        ws: WebSocketController,
        receive: Receive,
        resolver: ResolutionScope,
        path_params: Mapping[str, Any],
    ) -> int | None:
        """Serve the connection; its close code, or None when a native session took it over."""
        raise NotImplementedError

    async def _disconnected(self, ws: WebSocketController, resolver: ResolutionScope, code: int) -> None:
        pass

    async def failed(self, ws: WebSocketController, exc: BaseException) -> int:
        """A hook raised: close (or refuse) as the error says; returns the close code."""
        if isinstance(exc, WebSocketDisconnectError):
            return ws.close_code or exc.code
        if isinstance(exc, WebSocketError):
            if ws.websocket_state is _CONNECTING:
                await ws.refuse(403, exc.reason or None)
                return ws.close_code or CloseCode.POLICY_VIOLATION
            code = exc.code
            if not is_sendable_close_code(code):
                logger.error(
                    "WebSocketError(%d) on %s: %d cannot be sent in a close frame; closing with 1011",
                    code,
                    ws.scope.get("path"),
                    code,
                )
                code = CloseCode.INTERNAL_ERROR
            await ws.close(code, exc.reason)
            return ws.close_code or code
        path = ws.scope.get("path", "")
        logger.exception("WebSocket handler for %s failed (connection %s)", path, ws.id)
        events = _events_of(ws)
        if events is not None:
            await events.publish(ErrorRaised(exc, path, "websocket"))
        if ws.websocket_state is _CONNECTING:
            await ws.refuse(500, "Internal Server Error")
        else:
            await ws.close(CloseCode.INTERNAL_ERROR, "internal error")
        return ws.close_code or CloseCode.INTERNAL_ERROR


class _ControllerRunner(_Runner):
    __slots__ = ("connect_plan", "disconnect_plan", "message_plan", "policy")

    def __init__(self, cls: type[WebSocketController], container: Container, names: tuple[str, ...]) -> None:
        super().__init__(cls, container, (cls, cls.on_connect))
        self.policy = _frame_policy(cls)
        name = cls.__qualname__
        self.connect_plan = _hook_plan(container, cls.on_connect, names, 1, f"{name}.on_connect")
        self.message_plan = _hook_plan(container, cls.on_message, names, 2, f"{name}.on_message")
        self.disconnect_plan = _hook_plan(container, cls.on_disconnect, names, 2, f"{name}.on_disconnect")

    async def _run(
        self,
        ws: WebSocketController,
        receive: Receive,
        resolver: ResolutionScope,
        path_params: Mapping[str, Any],
    ) -> int | None:
        uses_context = self.message_plan is not None or self.connect_plan is not None
        context = {WebSocketHandler: ws} if uses_context else {}
        try:
            if not await self._connect(ws, resolver, context, path_params):
                return ws.close_code or CloseCode.POLICY_VIOLATION
            sock = ws.native
            if sock is not None:  # the native path: no task while the connection is idle
                ws.core.set_policy(self.policy)
                NativeSession(self, ws, sock, resolver, context, path_params).begin()
                return None
            await self._serve(ws, receive, resolver, context, path_params)
            return ws.close_code or CloseCode.NO_STATUS
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001  # the boundary that runs user code; _failed logs it
            return await self.failed(ws, exc)

    async def _connect(
        self,
        ws: WebSocketController,
        resolver: ResolutionScope,
        context: Mapping[type[Any], Any],
        path_params: Mapping[str, Any],
    ) -> bool:
        """Run `on_connect`; True when it left the connection open."""
        connect_plan = self.connect_plan
        if connect_plan is None:
            await ws.on_connect()
        else:
            await ws.on_connect(**await _kwargs(connect_plan, resolver, context, path_params))
        if ws.is_open:
            return True
        if ws.websocket_state is _CONNECTING:
            await ws.refuse(403, "the connection was not accepted")
        return False

    async def _serve(
        self,
        ws: WebSocketController,
        receive: Receive,
        resolver: ResolutionScope,
        context: Mapping[type[Any], Any],
        path_params: Mapping[str, Any],
    ) -> None:
        """The message loop: the core judges each message, this carries the verdict out."""
        core: ConnectionCore = ws.core
        core.set_policy(self.policy)
        judge = ws.judge
        core_receive = core.receive
        handle = self.handle
        while core.state is _OPEN:
            message = await receive()
            # a text frame straight to the core (one call less per message); anything else
            # is the handler's to read
            text = message.get("text") if message["type"] == "websocket.receive" else None
            await handle(
                ws, core_receive(text) if text is not None else judge(message), resolver, context, path_params
            )

    async def handle(
        self,
        ws: WebSocketController,
        incoming: Incoming,
        resolver: ResolutionScope,
        context: Mapping[type[Any], Any],
        path_params: Mapping[str, Any],
    ) -> None:
        """Carry out the core's verdict on one message (both paths)."""
        verdict = incoming.verdict
        if verdict is _ACCEPT or verdict is _INVALID:
            events = ws.events
            if events is not None and events.wants(WebSocketMessageReceived):
                await events.publish(WebSocketMessageReceived(ws.id, ws.scope.get("path", ""), incoming.size))
            if verdict is _INVALID:
                await ws.on_invalid_message(incoming.text, incoming.value)
                return
            plan = self.message_plan
            if plan is None:
                await ws.on_message(incoming.value)
                return
            kwargs = plan.kwargs(resolver, context, path_params)
            if not isinstance(kwargs, dict):
                kwargs = await kwargs
            await ws.on_message(incoming.value, **kwargs)
        elif verdict is _REPLY:
            await ws.send_error(incoming.text)
        elif verdict is _CLOSE:
            await ws.finish_close(incoming.text)

    async def _disconnected(self, ws: WebSocketController, resolver: ResolutionScope, code: int) -> None:
        try:
            plan = self.disconnect_plan
            if plan is None:
                await ws.on_disconnect(code)
            else:
                context = {WebSocketHandler: ws}
                path_params = ws.scope.get("path_params") or {}
                await ws.on_disconnect(code, **await _kwargs(plan, resolver, context, path_params))
        except Exception as exc:  # the boundary that runs user code
            path = ws.scope.get("path", "")
            logger.exception("on_disconnect of %s failed (connection %s)", path, ws.id)
            events = _events_of(ws)
            if events is not None:
                await events.publish(ErrorRaised(exc, path, "websocket"))


def _frame_policy(cls: type[WebSocketController]) -> FramePolicy:
    """What `cls` accepts from its clients, checked now so that a bad option fails at registration."""
    name = cls.__qualname__
    if cls.receives not in ("text", "bytes", "any"):
        raise ConfigurationError(f"{name}.receives = {cls.receives!r}; use 'text', 'bytes' or 'any'")
    if not isinstance(cls.max_message_size, int) or cls.max_message_size < 1:
        raise ConfigurationError(f"{name}.max_message_size = {cls.max_message_size!r}; use a positive int")
    limit = cls.rate_limit
    if limit is not None and not isinstance(limit, RateLimit):
        raise ConfigurationError(f"{name}.rate_limit = {limit!r}; use RateLimit(per_second, burst)")
    decode: Callable[[str | bytes], Any] | None = None
    if cls.message_type is not None:  # the decoder HTTP bodies use too
        decode = json_decoder(cls.message_type, f"{name}.message_type")
    return FramePolicy(cls.receives, cls.max_message_size, limit, decode)


def _events_of(ws: WebSocketHandler) -> EventBus | None:
    events: EventBus | None = getattr(ws.scope.get("app"), "events", None)
    return events


class _FunctionRunner(_Runner):
    __slots__ = ("func", "plan")

    def __init__(
        self, func: Callable[..., Awaitable[None]], container: Container, names: tuple[str, ...]
    ) -> None:
        super().__init__(_connection_class(func), container, (func,))
        self.func = func
        self.plan = container.plan(func, path_params=names, context=(WebSocketHandler,))

    async def _run(
        self,
        ws: WebSocketController,
        receive: Receive,
        resolver: ResolutionScope,
        path_params: Mapping[str, Any],
    ) -> int:
        try:
            await self.func(**await _kwargs(self.plan, resolver, {WebSocketHandler: ws}, path_params))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001  # the boundary that runs user code; _failed logs it
            return await self.failed(ws, exc)
        if ws.websocket_state is _CONNECTING:
            await ws.refuse(403, "the connection was not accepted")
        elif ws.is_open:
            await ws.close()
        return ws.close_code or CloseCode.NORMAL


def _hook_plan(
    container: Container, hook: Callable[..., Any], names: tuple[str, ...], skip: int, where: str
) -> CallPlan | None:
    plan = container.plan(hook, path_params=names, context=(WebSocketHandler,), skip=skip, where=where)
    return plan if plan.params or plan.request_params else None


async def _kwargs(
    plan: CallPlan,
    resolver: ResolutionScope,
    context: Mapping[type[Any], Any],
    path_params: Mapping[str, Any],
) -> dict[str, Any]:
    kwargs = plan.kwargs(resolver, context, path_params)
    if isinstance(kwargs, dict):
        return kwargs
    return await kwargs


def _invalid_input(error: RequestValidationError) -> WebSocketError:
    """A handshake value that does not fit a hook's (or a dependency's) parameter: refused (403)."""
    return WebSocketError(CloseCode.POLICY_VIOLATION, error.detail[:120])


def _connection_class(func: Callable[..., Any]) -> type[WebSocketController]:
    """The controller class a function endpoint asks for (a subclass, or the plain one)."""
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # noqa: BLE001  # the container's plan reports bad annotations clearly
        return WebSocketController
    found = {hint for hint in hints.values() if isinstance(hint, type) and issubclass(hint, WebSocketHandler)}
    if len(found) == 1:
        (cls,) = found
        if issubclass(cls, WebSocketController):
            return cls
    return WebSocketController

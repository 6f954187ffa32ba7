"""`WebSocketController`, what users subclass, and the runner that serves it per connection."""

from __future__ import annotations

import asyncio
import inspect
import logging
import typing
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from typing import Any, ClassVar, Literal

import msgspec

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
from wirehall.security.access import access_denied
from wirehall.types import ASGIApp, Receive, Scope, Send
from wirehall.websocket.codes import CloseCode
from wirehall.websocket.handler import WebSocketHandler, WebSocketState, is_sendable_close_code
from wirehall.websocket.ratelimit import RateLimit
from wirehall.websocket.service import WebSocketService

__all__ = ["WebSocketController", "build_websocket_endpoint"]

logger = logging.getLogger(__name__)

_OPEN = WebSocketState.OPEN
_CONNECTING = WebSocketState.CONNECTING
_TEXT, _BYTES, _ANY = 0, 1, 2
_RECEIVES = {"text": _TEXT, "bytes": _BYTES, "any": _ANY}
_DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError)


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
        max_message_size: bytes (UTF-8 for text); a bigger message closes with 1009.
        rate_limit: a `RateLimit`; messages over it get an error frame and are dropped,
            and a client that keeps sending over it is closed with 1008 (see `RateLimit`).
    """

    __slots__ = ("_accepted", "_events")

    receives: ClassVar[Literal["text", "bytes", "any"]] = "text"
    message_type: ClassVar[Any] = None
    max_message_size: ClassVar[int] = 65536
    rate_limit: ClassVar[RateLimit | None] = None

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        super().__init__(scope, receive, send)
        self._events: EventBus | None = None
        self._accepted = False

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
        service = self._service
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
        self._accepted = True
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
        ws._events = events
        task = ws._main_task = asyncio.current_task()
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
        code: int = CloseCode.NO_STATUS
        resolver = self.container.scope()
        try:
            try:
                code = await self._run(ws, resolver, scope.get("path_params") or {})
            except asyncio.CancelledError:
                # Cancelled by the connection itself because the peer takes nothing: carry on.
                if not ws._aborting or task is None or task.uncancel() > 0:
                    raise
                code = ws.close_code or CloseCode.ABNORMAL
            if ws._accepted:
                await self._disconnected(ws, resolver, code)
        finally:
            if service is not None:
                service.unregister(ws)
            await resolver.aclose()
        if ws._accepted and events is not None and events.wants(WebSocketDisconnected):
            await events.publish(WebSocketDisconnected(ws.id, scope.get("path", ""), code))

    async def _run(
        self, ws: WebSocketController, resolver: ResolutionScope, path_params: Mapping[str, Any]
    ) -> int:
        raise NotImplementedError

    async def _disconnected(self, ws: WebSocketController, resolver: ResolutionScope, code: int) -> None:
        pass

    async def _failed(self, ws: WebSocketController, exc: BaseException) -> int:
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
        events = ws._events
        if events is not None:
            await events.publish(ErrorRaised(exc, path, "websocket"))
        if ws.websocket_state is _CONNECTING:
            await ws.refuse(500, "Internal Server Error")
        else:
            await ws.close(CloseCode.INTERNAL_ERROR, "internal error")
        return ws.close_code or CloseCode.INTERNAL_ERROR


class _ControllerRunner(_Runner):
    __slots__ = (
        "connect_plan",
        "decode",
        "disconnect_plan",
        "limit",
        "max_size",
        "message_plan",
        "rate_error",
        "receives",
    )

    def __init__(self, cls: type[WebSocketController], container: Container, names: tuple[str, ...]) -> None:
        super().__init__(cls, container, (cls, cls.on_connect))
        name = cls.__qualname__
        receives = _RECEIVES.get(cls.receives)
        if receives is None:
            raise ConfigurationError(f"{name}.receives = {cls.receives!r}; use 'text', 'bytes' or 'any'")
        self.receives = receives
        if not isinstance(cls.max_message_size, int) or cls.max_message_size < 1:
            raise ConfigurationError(
                f"{name}.max_message_size = {cls.max_message_size!r}; use a positive int"
            )
        self.max_size = cls.max_message_size
        limit = cls.rate_limit
        if limit is not None and not isinstance(limit, RateLimit):
            raise ConfigurationError(f"{name}.rate_limit = {limit!r}; use RateLimit(per_second, burst)")
        self.limit = limit
        self.rate_error = (
            f"rate limit exceeded: at most {limit.per_second:g} messages per second; this message was dropped"
            if limit is not None
            else ""
        )
        self.decode: Callable[[str | bytes], Any] | None = None
        if cls.message_type is not None:
            try:
                self.decode = msgspec.json.Decoder(cls.message_type).decode
            except TypeError as exc:
                raise ConfigurationError(
                    f"{name}.message_type = {cls.message_type!r} cannot be decoded from JSON: {exc}"
                ) from exc
        self.connect_plan = _hook_plan(container, cls.on_connect, names, 1, f"{name}.on_connect")
        self.message_plan = _hook_plan(container, cls.on_message, names, 2, f"{name}.on_message")
        self.disconnect_plan = _hook_plan(container, cls.on_disconnect, names, 2, f"{name}.on_disconnect")

    async def _run(
        self, ws: WebSocketController, resolver: ResolutionScope, path_params: Mapping[str, Any]
    ) -> int:
        plan = self.message_plan
        context = {WebSocketHandler: ws} if plan is not None or self.connect_plan is not None else {}
        data: Any
        try:
            connect_plan = self.connect_plan
            if connect_plan is None:
                await ws.on_connect()
            else:
                await ws.on_connect(**await _kwargs(connect_plan, resolver, context, path_params))
            if ws._state is not _OPEN:
                if ws._state is _CONNECTING:
                    await ws.refuse(403, "the connection was not accepted")
                return ws.close_code or CloseCode.POLICY_VIOLATION
            # The message loop: the per-message path, kept lean.
            receive = ws._receive
            on_message = ws.on_message
            receives = self.receives
            max_size = self.max_size
            text_limit = max_size // 4  # a text this long or shorter cannot exceed max_size in UTF-8
            decode = self.decode
            bucket = self.limit.bucket() if self.limit is not None else None
            events = ws._events
            while ws._state is _OPEN:
                message = await receive()
                if message["type"] != "websocket.receive":
                    ws._unexpected(message)
                if ws._state is not _OPEN:
                    break  # closed from elsewhere while this frame was on its way
                text = message.get("text")
                if text is not None:
                    if receives == _BYTES:
                        await ws.close(CloseCode.UNSUPPORTED_DATA, "text frames are not accepted here")
                        break
                    size = len(text)
                    if size > text_limit and not text.isascii():
                        size = len(text.encode())
                    data = text
                else:
                    data = message.get("bytes") or b""
                    if receives == _TEXT:
                        await ws.close(CloseCode.UNSUPPORTED_DATA, "binary frames are not accepted here")
                        break
                    size = len(data)
                if size > max_size:
                    await ws.close(
                        CloseCode.MESSAGE_TOO_BIG, f"message of {size} bytes; the limit is {max_size}"
                    )
                    break
                if bucket is not None and not bucket.take():
                    if bucket.exhausted:
                        await ws.close(CloseCode.POLICY_VIOLATION, "rate limit exceeded")
                        break
                    await ws.send_error(self.rate_error)
                    continue
                if events is not None and events.wants(WebSocketMessageReceived):
                    await events.publish(WebSocketMessageReceived(ws.id, ws.scope.get("path", ""), size))
                if decode is not None:
                    try:
                        data = decode(data)
                    except _DECODE_ERRORS as exc:
                        await ws.on_invalid_message(str(exc), data)
                        continue
                    except RecursionError:
                        await ws.on_invalid_message("the message is nested too deeply", data)
                        continue
                if plan is None:
                    await on_message(data)
                else:
                    kwargs = plan.kwargs(resolver, context, path_params)
                    if not isinstance(kwargs, dict):
                        kwargs = await kwargs
                    await on_message(data, **kwargs)
            return ws.close_code or CloseCode.NO_STATUS
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001  # the boundary that runs user code; _failed logs it
            return await self._failed(ws, exc)

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
            if ws._events is not None:
                await ws._events.publish(ErrorRaised(exc, path, "websocket"))


class _FunctionRunner(_Runner):
    __slots__ = ("func", "plan")

    def __init__(
        self, func: Callable[..., Awaitable[None]], container: Container, names: tuple[str, ...]
    ) -> None:
        super().__init__(_connection_class(func), container, (func,))
        self.func = func
        self.plan = container.plan(func, path_params=names, context=(WebSocketHandler,))

    async def _run(
        self, ws: WebSocketController, resolver: ResolutionScope, path_params: Mapping[str, Any]
    ) -> int:
        try:
            await self.func(**await _kwargs(self.plan, resolver, {WebSocketHandler: ws}, path_params))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001  # the boundary that runs user code; _failed logs it
            return await self._failed(ws, exc)
        if ws.websocket_state is _CONNECTING:
            await ws.refuse(403, "the connection was not accepted")
        elif ws.websocket_state is _OPEN:
            await ws.close()
        return ws.close_code or CloseCode.NORMAL


def _hook_plan(
    container: Container, hook: Callable[..., Any], names: tuple[str, ...], skip: int, where: str
) -> CallPlan | None:
    plan = container.plan(hook, path_params=names, context=(WebSocketHandler,), skip=skip, where=where)
    return plan if plan.params else None


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

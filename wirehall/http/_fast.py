"""The HTTP fast path: every shortcut the commonest requests take, in one place.

Each shortcut stands for a general step and gives the same ASGI messages
(tests/http/test_fast.py compares them, endpoint by endpoint):

- `to_response` turns a returned `str` / `dict` / `list` into what
  `PlainTextResponse(value)` / `JSONResponse(value)` build, without `__init__`'s branches;
- `DefaultHeaders` adds the security headers with `add_headers`, except to a plain text or
  JSON response over http, which gets the same headers computed once at startup;
- `plain_endpoint` runs an endpoint that takes no parameters without a DI scope or a
  `Request`, and sends a complete-body `Response` as its two messages without entering
  `Response.__call__` (one coroutine frame less);
- `direct_handler` does the same for an endpoint whose parameters all come from the request
  (path, query, header and cookie values, the body): bound without a DI scope.

The general path is `wirehall.http.controller`; both share `refuse`, `refusal_of` and `to_response`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import msgspec

from wirehall._param_binding import compile_scope_binder
from wirehall.di import CallPlan
from wirehall.errors import HTTPError
from wirehall.http.request import DEFAULT_MAX_BODY_SIZE, Request
from wirehall.http.response import JSONResponse, PlainTextResponse, Response, error_response
from wirehall.security.access import AUTH_ATTRIBUTE, access_denied
from wirehall.types import Message, Receive, Scope, Send

__all__ = [
    "LENGTH_HEADERS",
    "PLAIN_ROUTE",
    "TEXT_PLAIN",
    "DefaultHeaders",
    "Encode",
    "ErrorAnswer",
    "Finisher",
    "Guard",
    "GuardScope",
    "Handler",
    "PlainRoute",
    "body_message",
    "direct_handler",
    "plain_endpoint",
    "prepare",
    "refusal_of",
    "refuse",
    "start_message",
    "to_response",
]

Handler = Callable[[Scope, Receive, Send], Awaitable[None]]
Finisher = Callable[[Response, Scope], None]
"""Changes every response before it is sent (the app's default headers)."""
Guard = Callable[[tuple[object, ...], Scope], tuple[int, str] | None]
"""Asked before each request with the endpoint (or controller class and method): None to
run it, or the (status, detail) to answer instead (the app's same-site checks)."""
ErrorAnswer = Callable[[Exception, Scope, Receive, Send], Awaitable[int]]
"""Answers an exception raised by user code; returns the status sent (the app's handlers)."""

TEXT_PLAIN = (b"content-type", b"text/plain; charset=utf-8")
"""The content type of a returned str."""
_JSON = (b"content-type", b"application/json")
_PLAIN_TYPES = frozenset({TEXT_PLAIN, _JSON})
_NO_CONTENT = b""
_encode = msgspec.json.Encoder().encode
_send_whole = Response.__call__


def _quick(cls: type[Response], body: bytes, content_type: tuple[bytes, bytes]) -> Response:
    # what Response.__init__ does for a 200 without headers, unrolled
    response = cls.__new__(cls)
    response.status = 200
    response.body = body
    response.raw_headers = [(b"content-length", str(len(body)).encode()), content_type]
    return response


Encode = Callable[[Any], bytes]
"""Encodes a returned value as JSON (the app's encoder, with its `json_enc_hook`)."""


def to_response(value: Any, kept: Response | None = None, encode: Encode | None = None) -> Response:
    """Turn what an endpoint returned into a Response.

    `kept` is what a `send_*` helper of the controller built: the answer when it returned None.
    `encode` encodes JSON (default: msgspec's, without an `enc_hook`).
    """
    if isinstance(value, Response):
        return value
    if isinstance(value, str):
        return _quick(PlainTextResponse, value.encode(), TEXT_PLAIN)
    if value is None:
        return kept if kept is not None else Response(_NO_CONTENT, 204)
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], int):
        response = to_response(value[0], kept, encode)
        response.status = value[1]
        return response
    if isinstance(value, bytes):
        return Response(value, media_type="application/octet-stream")
    # dicts, lists, Structs, dataclasses, numbers, booleans
    try:
        return _quick(JSONResponse, (encode or _encode)(value), _JSON)
    except (TypeError, msgspec.EncodeError) as exc:
        raise TypeError(
            f"cannot encode the {type(value).__qualname__} the endpoint returned as JSON ({exc}); "
            "return dicts, lists, msgspec Structs, dataclasses or a Response, or teach the encoder "
            "the type at fault with Wirehall(json_enc_hook=...)"
        ) from exc


class HeaderSource(Protocol):
    """Adds the missing default headers to a response's raw headers, in place."""

    def add_headers(self, headers: list[tuple[bytes, bytes]], *, https: bool) -> None: ...


class DefaultHeaders:
    """A `Finisher` adding `source`'s headers to every response the app builds itself."""

    __slots__ = ("_plain", "_source", "tails")

    def __init__(self, source: HeaderSource) -> None:
        self._source = source
        # what any non-HTML response without headers of its own gets, computed once
        plain = [(b"content-length", b"0"), (b"content-type", b"text/plain")]
        source.add_headers(plain, https=False)
        self._plain = tuple(plain[2:])
        secure = [(b"content-length", b"0"), (b"content-type", b"text/plain")]
        source.add_headers(secure, https=True)
        self.tails = (self._plain, tuple(secure[2:]))
        """The headers added to a plain text or JSON response over http, and over https."""

    def __call__(self, response: Response, scope: Scope) -> None:
        headers = response.raw_headers
        https = scope.get("scheme") == "https"
        if not https and len(headers) == 2 and headers[1] in _PLAIN_TYPES:
            headers.extend(self._plain)  # a returned str / dict / list: no header of its own
        else:
            self._source.add_headers(headers, https=https)


async def refuse(
    status: int,
    scope: Scope,
    receive: Receive,
    send: Send,
    finish: Finisher | None,
    detail: str | None = None,
) -> None:
    """Answer `status` instead of running the endpoint (access rules, same-site guard)."""
    refusal = error_response(
        status, detail, headers={"WWW-Authenticate": "Bearer"} if status == 401 else None
    )
    if finish is not None:
        finish(refusal, scope)
    await refusal(scope, receive, send)


GuardScope = Callable[[tuple[object, ...]], bool]
"""Whether the app's `Guard` has anything to check for these targets (the endpoint, or the
controller class and method): for a mark-driven guard, whether one of them is marked."""


def _guarded(targets: tuple[object, ...], guard: Guard | None, guard_scope: GuardScope | None) -> bool:
    """Whether a request to `targets` must ask `refusal_of`: an auth mark, or a guard that
    applies to them (any guard, when the app does not say which targets it concerns)."""
    if any(getattr(target, AUTH_ATTRIBUTE, None) is not None for target in targets):
        return True
    return guard is not None and (guard_scope is None or guard_scope(targets))


def prepare(handler: Handler, guard_scope: GuardScope | None = None) -> None:
    """Tell a handler of this module that the app starts: it reads its endpoint's marks
    (`requires_auth`, and through `guard_scope` the guard's own) now, and from then on checks
    access only when one is there. Until then (a handler used without an app) it checks
    every request."""
    ready: Callable[[GuardScope | None], None] | None = getattr(handler, _PREPARE, None)
    if ready is not None:
        ready(guard_scope)


_PREPARE = "_wirehall_prepare"
LENGTH_HEADERS = tuple((b"content-length", str(n).encode()) for n in range(1024))
"""The `content-length` header of a body of 0 to 1023 bytes, built once."""
_NO_TAILS: tuple[tuple[tuple[bytes, bytes], ...], tuple[tuple[bytes, bytes], ...]] = ((), ())


def _quick_setup(
    finish: Finisher | None, status_code: int | None, encode: Encode | None
) -> tuple[bool, Any, Encode]:
    """(whether a returned str / dict / list / Struct can be sent without a Response object,
    the default headers for http and for https, the JSON encoder)."""
    if finish is None:
        tails = _NO_TAILS
    elif type(finish) is DefaultHeaders:
        tails = finish.tails
    else:
        return False, _NO_TAILS, _encode
    return True, tails, encode or _encode


def _quick_body(value: Any, encode: Encode) -> tuple[bytes, tuple[bytes, bytes]] | None:
    """The body and content type `to_response` gives a str, dict, list or Struct (None for
    anything else, or a value the encoder refuses: `to_response` then says why)."""
    kind = type(value)
    if kind is str:
        return value.encode(), TEXT_PLAIN
    if kind is dict or kind is list or isinstance(value, msgspec.Struct):
        try:
            return encode(value), _JSON
        except (TypeError, msgspec.EncodeError):
            return None
    return None


def start_message(
    status: int, body: bytes, content_type: tuple[bytes, bytes], tails: Any, scope: Scope
) -> Message:
    """The `http.response.start` of a complete `body`: its length and type, then the default
    headers for the scope's scheme (`tails`, as `_quick_setup` gives them)."""
    size = len(body)
    return {
        "type": "http.response.start",
        "status": status,
        "headers": [
            LENGTH_HEADERS[size] if size < 1024 else (b"content-length", b"%d" % size),
            content_type,
            *tails[scope.get("scheme") == "https"],
        ],
    }


def body_message(body: bytes, scope: Scope) -> Message:
    """The `http.response.body` of a complete `body` (empty for HEAD)."""
    return {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}


class PlainRoute:
    """A parameterless endpoint, in the parts `Wirehall.__call__` needs to run it itself on a
    static path when nothing else sees the request (no middleware, request events, log
    context, metrics, nor an access rule for it): the messages its handler sends, with one
    coroutine frame fewer. `plain_endpoint` makes it; the app asks `guarded` at startup.
    """

    __slots__ = ("endpoint", "fail", "guarded", "rest", "status", "text_tails")

    def __init__(
        self,
        endpoint: Callable[[], Awaitable[Any]],
        status: int,
        text_tails: Any,
        rest: Callable[[Any, Scope, Receive, Send], Awaitable[None]],
        fail: ErrorAnswer,
    ) -> None:
        self.endpoint = endpoint
        self.status = status
        self.text_tails = text_tails
        """The default headers of a returned str, for http and https (`start_message`'s
        `tails`); None when a returned str goes through `rest` too."""
        self.rest = rest
        """Answers any other returned value."""
        self.fail = fail
        """Answers what the endpoint, or sending its answer, raised (re-raises without an
        error handler)."""
        self.guarded = True
        """Whether requests must ask `refusal_of` first (until the app has started: always)."""


PLAIN_ROUTE = "_wirehall_plain_route"
"""The attribute of a `plain_endpoint` handler that holds its `PlainRoute`."""


def plain_endpoint(
    endpoint: Callable[[], Awaitable[Any]],
    finish: Finisher | None,
    guard: Guard | None,
    on_error: ErrorAnswer | None,
    answer: Callable[[Any], Response] = to_response,
    *,
    status_code: int | None = None,
    encode: Encode | None = None,
) -> Handler:
    """The handler of a function endpoint that takes no parameters.

    `answer` turns the returned value into the Response (`to_response` unless the route sets a
    status code or the app an encoder: `status_code` and `encode`, which it was made from).
    A returned str, dict, list or Struct is sent as the two messages that Response would
    send, built directly. The handler's `PlainRoute` (attribute `PLAIN_ROUTE`) holds the same
    steps for the app to run without the handler, which it does for most requests (the
    handler serves those that middleware, events or an access rule must see).
    """
    targets = (endpoint,)
    quick, tails, encoder = _quick_setup(finish, status_code, encode)
    status = 200 if status_code is None else status_code
    text_tails = tails if quick else None

    async def rest(value: Any, scope: Scope, receive: Receive, send: Send) -> None:
        found = _quick_body(value, encoder) if quick else None
        if found is not None:
            body, content_type = found
            await send(start_message(status, body, content_type, tails, scope))
            await send(body_message(body, scope))
            return
        await _send_response(answer(value), scope, receive, send, finish)

    async def fail(exc: Exception, scope: Scope, receive: Receive, send: Send) -> int:
        if on_error is None:
            raise exc
        return await on_error(exc, scope, receive, send)

    plain = PlainRoute(endpoint, status, text_tails, rest, fail)

    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            if plain.guarded:
                refusal = refusal_of(targets, scope, guard)
                if refusal is not None:
                    await refuse(refusal[0], scope, receive, send, finish, refusal[1])
                    return
            await rest(await endpoint(), scope, receive, send)
        except Exception as exc:  # noqa: BLE001 - the boundary that runs user code
            await fail(exc, scope, receive, send)

    def ready(guard_scope: GuardScope | None) -> None:
        plain.guarded = _guarded(targets, guard, guard_scope)

    setattr(handle, _PREPARE, ready)
    setattr(handle, PLAIN_ROUTE, plain)
    return handle


async def _send_response(
    response: Response, scope: Scope, receive: Receive, send: Send, finish: Finisher | None
) -> None:
    """Send a Response: a complete body as its two messages, else through its own `__call__`."""
    if finish is not None:
        finish(response, scope)
    if type(response).__call__ is not _send_whole:
        await response(scope, receive, send)  # streams, files: their own sending
        return
    await send({"type": "http.response.start", "status": response.status, "headers": response.raw_headers})
    body = b"" if scope["method"] == "HEAD" else response.body
    await send({"type": "http.response.body", "body": body})


def direct_handler(
    endpoint: Callable[..., Any],
    plan: CallPlan,
    finish: Finisher | None,
    guard: Guard | None,
    on_error: ErrorAnswer | None,
    answer: Callable[..., Response],
    *,
    status_code: int | None = None,
    encode: Encode | None = None,
) -> Handler:
    """`_function_handler` for an endpoint that takes nothing from the container (only path,
    query, header and cookie values, the body, the request): no resolution scope, the JSON
    body decoded from its bytes, and a complete response sent as its two messages, as
    `plain_endpoint` does. Same order, answers and errors.

    When it takes no `Request` and nothing but path and query values and a JSON body, no
    `Request` is built either: the values come from one function generated for the route
    (`compile_scope_binder`), the body from `receive` directly.
    """
    values = [p for p in plan.request_params if p.source != "body"]
    bind = None
    if not plan.takes_context and (plan.read_body is None or plan.json_body is not None):
        bind = compile_scope_binder(values, [p.name for p in plan.params])
    if bind is None:
        return _request_handler(endpoint, plan, finish, guard, on_error, answer, status_code, encode)
    return _scope_handler(endpoint, plan, bind, finish, guard, on_error, answer, status_code, encode)


def _scope_handler(
    endpoint: Callable[..., Any],
    plan: CallPlan,
    bind: Callable[[Scope], dict[str, Any]],
    finish: Finisher | None,
    guard: Guard | None,
    on_error: ErrorAnswer | None,
    answer: Callable[..., Response],
    status_code: int | None,
    encode: Encode | None,
) -> Handler:
    """`direct_handler` for an endpoint that takes path and query values and a JSON body only."""
    targets = (endpoint,)
    guarded = True
    body_name = plan.body_name
    decode_json = plan.json_body
    quick, tails, encoder = _quick_setup(finish, status_code, encode)
    status = 200 if status_code is None else status_code

    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            if guarded:
                refusal = refusal_of(targets, scope, guard)
                if refusal is not None:
                    await refuse(refusal[0], scope, receive, send, finish, refusal[1])
                    return
            kwargs = bind(scope)
            if decode_json is not None:
                # what Request.body() does, without a Request: the body is usually one message
                limit = _body_limit(scope)
                message = await receive()
                if message["type"] == "http.request" and not message.get("more_body", False):
                    body = message.get("body", b"")
                    if len(body) > limit:
                        raise HTTPError(413, f"request body is larger than {limit} bytes")
                else:
                    body = await Request(scope, receive)._gather(message, limit)
                kwargs[body_name] = decode_json(body)
            value = await endpoint(**kwargs)
            found = _quick_body(value, encoder) if quick else None
            if found is not None:
                # `start_message` and `body_message`, unrolled: the typed route's hot path
                body, content_type = found
                size = len(body)
                await send(
                    {
                        "type": "http.response.start",
                        "status": status,
                        "headers": [
                            LENGTH_HEADERS[size] if size < 1024 else (b"content-length", b"%d" % size),
                            content_type,
                            *tails[scope.get("scheme") == "https"],
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
                return
            await _send_response(answer(value), scope, receive, send, finish)
        except Exception as exc:  # the boundary that runs user code
            if on_error is None:
                raise
            await on_error(exc, scope, receive, send)

    def ready(guard_scope: GuardScope | None) -> None:
        nonlocal guarded
        guarded = _guarded(targets, guard, guard_scope)

    setattr(handle, _PREPARE, ready)
    return handle


def _body_limit(scope: Scope) -> int:
    """The largest body the request may have; HTTPError 413 when it says it has more."""
    limit: int = getattr(scope.get("app"), "max_body_size", DEFAULT_MAX_BODY_SIZE)
    for name, declared in scope.get("headers", ()):
        if name == b"content-length":
            if declared.isdigit() and int(declared) > limit:
                raise HTTPError(413, f"request body is larger than {limit} bytes")
            break
    return limit


def _request_handler(
    endpoint: Callable[..., Any],
    plan: CallPlan,
    finish: Finisher | None,
    guard: Guard | None,
    on_error: ErrorAnswer | None,
    answer: Callable[..., Response],
    status_code: int | None,
    encode: Encode | None,
) -> Handler:
    """`direct_handler` for an endpoint that takes the `Request`, headers, cookies or a form."""
    targets = (endpoint,)
    guarded = True
    kwargs_for = plan.direct_kwargs
    body_name = plan.body_name
    decode_json = plan.json_body
    read_body = plan.read_body if decode_json is None else None
    needs_path = plan.takes_path_params
    quick, tails, encoder = _quick_setup(finish, status_code, encode)
    status = 200 if status_code is None else status_code

    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            if guarded:
                refusal = refusal_of(targets, scope, guard)
                if refusal is not None:
                    await refuse(refusal[0], scope, receive, send, finish, refusal[1])
                    return
            request = Request(scope, receive)
            try:
                kwargs = kwargs_for(request, scope["path_params"] if needs_path else None)
                if decode_json is not None:
                    kwargs[body_name] = decode_json(await request.body())
                elif read_body is not None:
                    kwargs[body_name] = await read_body(request)
                value = await endpoint(**kwargs)
                found = _quick_body(value, encoder) if quick else None
                if found is not None:
                    body, content_type = found
                    await send(start_message(status, body, content_type, tails, scope))
                    await send(body_message(body, scope))
                else:
                    await _send_response(answer(value), scope, receive, send, finish)
            finally:
                if request.holds_files:
                    await request.close()
        except Exception as exc:  # the boundary that runs user code: answered after teardown
            if on_error is None:
                raise
            await on_error(exc, scope, receive, send)

    def ready(guard_scope: GuardScope | None) -> None:
        nonlocal guarded
        guarded = _guarded(targets, guard, guard_scope)

    setattr(handle, _PREPARE, ready)
    return handle


def refusal_of(
    targets: tuple[object, ...], scope: Scope, guard: Guard | None
) -> tuple[int, str | None] | None:
    """The (status, detail) to answer instead of running `targets`, or None to run them."""
    for target in targets:
        status = access_denied(target, scope)
        if status is not None:
            return status, None
    if guard is not None:
        return guard(targets, scope)
    return None

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

from wirehall.di import CallPlan
from wirehall.http.request import Request
from wirehall.http.response import JSONResponse, PlainTextResponse, Response, error_response
from wirehall.security.access import access_denied
from wirehall.types import Receive, Scope, Send

__all__ = [
    "DefaultHeaders",
    "Encode",
    "ErrorAnswer",
    "Finisher",
    "Guard",
    "Handler",
    "direct_handler",
    "plain_endpoint",
    "refusal_of",
    "refuse",
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

_TEXT = (b"content-type", b"text/plain; charset=utf-8")
_JSON = (b"content-type", b"application/json")
_PLAIN_TYPES = frozenset({_TEXT, _JSON})
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
        return _quick(PlainTextResponse, value.encode(), _TEXT)
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

    __slots__ = ("_plain", "_source")

    def __init__(self, source: HeaderSource) -> None:
        self._source = source
        # what any non-HTML response over http gets, computed once
        plain = [(b"content-type", b"text/plain")]
        source.add_headers(plain, https=False)
        self._plain = tuple(plain[1:])

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


def plain_endpoint(
    endpoint: Callable[[], Awaitable[Any]],
    finish: Finisher | None,
    guard: Guard | None,
    on_error: ErrorAnswer | None,
    answer: Callable[[Any], Response] = to_response,
) -> Handler:
    """The handler of a function endpoint that takes no parameters.

    `answer` turns the returned value into the Response (`to_response` unless the route sets a
    status code or the app an encoder).
    """
    targets = (endpoint,)

    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            # checked on every request, so `@requires_auth` works above or below the route decorator
            status = access_denied(endpoint, scope)
            if status is not None:
                await refuse(status, scope, receive, send, finish)
                return
            if guard is not None:
                refusal = guard(targets, scope)
                if refusal is not None:
                    await refuse(refusal[0], scope, receive, send, finish, refusal[1])
                    return
            response = answer(await endpoint())
            if finish is not None:
                finish(response, scope)
            if type(response).__call__ is not _send_whole:
                await response(scope, receive, send)  # streams, files: their own sending
                return
            await send(
                {"type": "http.response.start", "status": response.status, "headers": response.raw_headers}
            )
            body = b"" if scope["method"] == "HEAD" else response.body
            await send({"type": "http.response.body", "body": body})
        except Exception as exc:
            if on_error is None:
                raise
            await on_error(exc, scope, receive, send)

    return handle


def direct_handler(
    endpoint: Callable[..., Any],
    plan: CallPlan,
    finish: Finisher | None,
    guard: Guard | None,
    on_error: ErrorAnswer | None,
    answer: Callable[..., Response],
) -> Handler:
    """`_function_handler` for an endpoint that takes nothing from the container (only path,
    query, header and cookie values, the body, the request): no resolution scope, the JSON
    body decoded from its bytes, and a complete response sent as its two messages, as
    `plain_endpoint` does. Same order, answers and errors."""
    targets = (endpoint,)
    kwargs_for = plan.direct_kwargs
    body_name = plan.body_name
    decode_json = plan.json_body
    read_body = plan.read_body if decode_json is None else None
    needs_path = plan.takes_path_params

    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        try:
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
                response = answer(await endpoint(**kwargs))
                if finish is not None:
                    finish(response, scope)
                if type(response).__call__ is not _send_whole:
                    await response(scope, receive, send)  # streams, files: their own sending
                else:
                    await send(
                        {
                            "type": "http.response.start",
                            "status": response.status,
                            "headers": response.raw_headers,
                        }
                    )
                    body = b"" if scope["method"] == "HEAD" else response.body
                    await send({"type": "http.response.body", "body": body})
            finally:
                if request.holds_files:
                    await request.close()
        except Exception as exc:  # the boundary that runs user code: answered after teardown
            if on_error is None:
                raise
            await on_error(exc, scope, receive, send)

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

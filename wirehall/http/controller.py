"""HTTP endpoints: function endpoints and `HTTPController` classes, compiled once per route."""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

import msgspec

from wirehall.datastructures import URL, Address, Headers, QueryParams, State
from wirehall.di import CallPlan, Container, ResolutionScope
from wirehall.errors import ConfigurationError
from wirehall.http.request import Request
from wirehall.http.response import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    error_response,
)
from wirehall.types import Receive, Scope, Send

__all__ = ["HTTP_METHODS", "Guard", "HTTPController", "build_http_endpoint", "to_response"]

logger = logging.getLogger(__name__)

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD")
Handler = Callable[[Scope, Receive, Send], Awaitable[None]]
_NO_CONTENT = b""


class HTTPController:
    """Base class for class endpoints: define `get`, `post`, ... methods.

    Method parameters are filled like a function endpoint's: path parameters by name,
    everything else by type from the container. Return a value (dict -> JSON, str -> text,
    a Response as is) or call one of the `send_*` helpers.
    """

    __slots__ = ("_response", "request")

    def __init__(self, request: Request) -> None:
        self.request = request
        self._response: Response | None = None

    # what the request carries, under the same names as on WebSocketController
    @property
    def path_params(self) -> dict[str, Any]:
        """Parameters matched in the path."""
        return self.request.path_params

    @property
    def query(self) -> QueryParams:
        """Query-string parameters."""
        return self.request.query

    @property
    def headers(self) -> Headers:
        """Request headers."""
        return self.request.headers

    @property
    def cookies(self) -> dict[str, str]:
        """Request cookies."""
        return self.request.cookies

    @property
    def url(self) -> URL:
        """The request URL."""
        return self.request.url

    @property
    def client(self) -> Address | None:
        """The peer's address."""
        return self.request.client

    @property
    def state(self) -> State:
        """Per-request state."""
        return self.request.state

    @property
    def session(self) -> dict[str, Any]:
        """The signed-cookie session."""
        return self.request.session

    @property
    def user(self) -> Any:
        """The authenticated user, or None."""
        return self.request.user

    # answering ----------------------------------------------------------
    def _keep(self, response: Response) -> Response:
        self._response = response
        return response

    def send_text(self, text: str, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
        """Answer with plain text."""
        return self._keep(PlainTextResponse(text, status, headers))

    def send_html(self, html: str, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
        """Answer with HTML."""
        return self._keep(HTMLResponse(html, status, headers))

    def send_json(self, data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
        """Answer with JSON (dicts, lists, msgspec Structs, dataclasses...)."""
        return self._keep(JSONResponse(data, status, headers))

    def send_file(
        self,
        path: str | os.PathLike[str],
        *,
        filename: str | None = None,
        media_type: str | None = None,
    ) -> Response:
        """Answer with a file (streamed; ETag, 304 and Range handled)."""
        return self._keep(FileResponse(path, filename=filename, media_type=media_type))

    def send_redirect(self, url: str, status: int = 303) -> Response:
        """Redirect (303 See Other by default: the usual answer to a form post)."""
        return self._keep(RedirectResponse(url, status))

    def send_error(self, status: int, detail: str | None = None) -> Response:
        """Answer with a JSON error body `{"error": detail}`."""
        return self._keep(error_response(status, detail))

    def render(self, template: str, status: int = 200, **context: Any) -> Response:
        """Render a Jinja2 template of the app's `templates` (autoescaped) as HTML."""
        templates = self.request.app.templates
        if templates is None:
            raise ConfigurationError("the app has no templates; pass Wirehall(templates='dir')")
        context.setdefault("request", self.request)
        return self._keep(templates.response(template, context, status))


_TEXT = (b"content-type", b"text/plain; charset=utf-8")
_JSON = (b"content-type", b"application/json")
_encode = msgspec.json.Encoder().encode
_send_whole = Response.__call__


def _quick(cls: type[Response], body: bytes, content_type: tuple[bytes, bytes]) -> Response:
    # the hot path for the commonest return values: what Response.__init__ does, unrolled
    response = cls.__new__(cls)
    response.status = 200
    response.body = body
    response.raw_headers = [(b"content-length", str(len(body)).encode()), content_type]
    return response


def to_response(value: Any, controller: HTTPController | None = None) -> Response:
    """Turn what an endpoint returned into a Response."""
    if isinstance(value, Response):
        return value
    if isinstance(value, str):
        return _quick(PlainTextResponse, value.encode(), _TEXT)
    if isinstance(value, dict | list):
        try:
            return _quick(JSONResponse, _encode(value), _JSON)
        except (TypeError, msgspec.EncodeError):
            return JSONResponse(value)  # raises with a clear message
    if isinstance(value, msgspec.Struct):
        return JSONResponse(value)
    if value is None:
        if controller is not None and controller._response is not None:
            return controller._response
        return Response(_NO_CONTENT, 204)
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], int):
        response = to_response(value[0], controller)
        response.status = value[1]
        return response
    if isinstance(value, bytes):
        return Response(value, media_type="application/octet-stream")
    if dataclasses.is_dataclass(value) or isinstance(value, int | float | bool):
        return JSONResponse(value)
    return JSONResponse(value)  # let msgspec say what it cannot encode


def _is_controller(endpoint: Any) -> bool:
    return inspect.isclass(endpoint) and issubclass(endpoint, HTTPController)


def controller_methods(endpoint: type[HTTPController]) -> list[str]:
    """The HTTP methods a controller class defines."""
    methods = [m for m in HTTP_METHODS if callable(getattr(endpoint, m.lower(), None))]
    if not methods:
        raise ConfigurationError(
            f"{endpoint.__qualname__} defines none of get/post/put/patch/delete/options; "
            "an HTTPController needs at least one"
        )
    return methods


Finisher = Callable[[Response, Scope], None]
Guard = Callable[[tuple[object, ...], Scope], tuple[int, str] | None]
"""Asked before each request with the endpoint (or controller class and method): None to
run it, or the (status, detail) to answer instead (the app's same-site checks)."""


def build_http_endpoint(
    endpoint: Any,
    method: str,
    container: Container,
    path_params: Collection[str],
    finish: Finisher | None = None,
    guard: Guard | None = None,
) -> Handler:
    """Compile `endpoint` (a function or an HTTPController class) for one HTTP method.

    `finish`, when given, may change every response before it is sent (default headers);
    `guard`, when given, may refuse a request before the endpoint runs.
    """
    from wirehall.security.auth import access_denied

    if _is_controller(endpoint):
        func = getattr(endpoint, method.lower())
        plan = container.plan(func, path_params=path_params, context=(Request,), skip=1)
        return _controller_handler(endpoint, func, plan, access_denied, finish, guard)
    if not callable(endpoint):
        raise ConfigurationError(f"endpoint {endpoint!r} is neither a function nor an HTTPController")
    if not inspect.iscoroutinefunction(endpoint):
        raise ConfigurationError(
            f"endpoint {getattr(endpoint, '__qualname__', endpoint)!r} must be an async function (async def)"
        )
    plan = container.plan(endpoint, path_params=path_params, context=(Request,))
    return _function_handler(endpoint, plan, access_denied, finish, guard)


async def _refuse(
    status: int,
    scope: Scope,
    receive: Receive,
    send: Send,
    finish: Finisher | None,
    detail: str | None = None,
) -> None:
    refusal = error_response(
        status, detail, headers={"WWW-Authenticate": "Bearer"} if status == 401 else None
    )
    if finish is not None:
        finish(refusal, scope)
    await refusal(scope, receive, send)


def _function_handler(
    endpoint: Callable[..., Any],
    plan: CallPlan,
    access_denied: Any,
    finish: Finisher | None,
    guard: Guard | None,
) -> Handler:
    targets = (endpoint,)
    needs_request = any(p.kind == 2 for p in plan.params)
    needs_path = any(p.kind == 1 for p in plan.params)
    has_params = bool(plan.params)

    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        # checked on every request, so `@requires_auth` works above or below the route decorator
        status = access_denied(endpoint, scope)
        if status is not None:
            await _refuse(status, scope, receive, send, finish)
            return
        if guard is not None:
            refusal = guard(targets, scope)
            if refusal is not None:
                await _refuse(refusal[0], scope, receive, send, finish, refusal[1])
                return
        if not has_params:
            response = to_response(await endpoint())
            if finish is not None:
                finish(response, scope)
            if type(response).__call__ is _send_whole:  # a complete body: two sends, no extra frame
                await send(
                    {
                        "type": "http.response.start",
                        "status": response.status,
                        "headers": response.raw_headers,
                    }
                )
                await send(
                    {
                        "type": "http.response.body",
                        "body": b"" if scope["method"] == "HEAD" else response.body,
                    }
                )
            else:
                await response(scope, receive, send)
            return
        request = Request(scope, receive) if needs_request else None
        resolver = ResolutionScope(scope["app"].container)
        try:
            kwargs = plan.kwargs(resolver, {Request: request}, scope["path_params"] if needs_path else None)
            if not isinstance(kwargs, dict):
                kwargs = await kwargs
            result = await endpoint(**kwargs)
            response = to_response(result)
            if finish is not None:
                finish(response, scope)
            await response(scope, receive, send)
        finally:
            await resolver.aclose()
            if request is not None:
                await request.close()

    return handle


def _controller_handler(
    cls: type[HTTPController],
    func: Callable[..., Any],
    plan: CallPlan,
    access_denied: Any,
    finish: Finisher | None,
    guard: Guard | None,
) -> Handler:
    targets = (cls, func)

    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        status = access_denied(cls, scope) or access_denied(func, scope)
        if status is not None:
            await _refuse(status, scope, receive, send, finish)
            return
        if guard is not None:
            refusal = guard(targets, scope)
            if refusal is not None:
                await _refuse(refusal[0], scope, receive, send, finish, refusal[1])
                return
        request = Request(scope, receive)
        controller = cls(request)
        resolver = ResolutionScope(scope["app"].container)
        try:
            kwargs = plan.kwargs(resolver, {Request: request}, scope["path_params"])
            if not isinstance(kwargs, dict):
                kwargs = await kwargs
            result = await func(controller, **kwargs)
            response = to_response(result, controller)
            if finish is not None:
                finish(response, scope)
            await response(scope, receive, send)
        finally:
            await resolver.aclose()
            await request.close()

    return handle

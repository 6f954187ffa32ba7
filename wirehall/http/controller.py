"""HTTP endpoints: function endpoints and `HTTPController` classes, compiled once per route."""

from __future__ import annotations

import inspect
import logging
import os
import typing
from collections.abc import Callable, Collection, Mapping
from typing import Any

from wirehall.datastructures import URL, Address, Headers, QueryParams, State
from wirehall.di import CallPlan, Container, ResolutionScope
from wirehall.errors import ConfigurationError
from wirehall.http._fast import (
    Encode,
    ErrorAnswer,
    Finisher,
    Guard,
    Handler,
    direct_handler,
    plain_endpoint,
    refusal_of,
    refuse,
    to_response,
)
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
from wirehall.http.templates import Templates
from wirehall.params import MISSING, EndpointSpec, RequestValidationError
from wirehall.types import Receive, Scope, Send

__all__ = ["HTTP_METHODS", "Guard", "HTTPController", "build_http_endpoint", "to_response"]

# `to_response` and `Guard` are defined with the fast path and re-exported here, where
# they have always been imported from.

logger = logging.getLogger(__name__)

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD")


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

    async def on_invalid_input(self, error: RequestValidationError) -> Any:
        """A value of the request (query, header, cookie, body) did not fit the method's
        parameters; what this returns is the answer. The default raises `error` (a 422 with
        `{"error": ..., "detail": [{"loc": [...], "msg": ...}]}`); override it to answer
        differently, as `WebSocketController.on_invalid_message` does for messages."""
        raise error

    def render(self, template: str, status: int = 200, **context: Any) -> Response:
        """Render a Jinja2 template of the app's `templates` (autoescaped) as HTML."""
        templates = getattr(self.request.app, "templates", None)
        if not isinstance(templates, Templates):
            raise ConfigurationError("the app has no templates; pass Wirehall(templates='dir')")
        context.setdefault("request", self.request)
        return self._keep(templates.response(template, context, status))


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


def build_http_endpoint(
    endpoint: Any,
    method: str,
    container: Container,
    path_params: Collection[str],
    finish: Finisher | None = None,
    guard: Guard | None = None,
    on_error: ErrorAnswer | None = None,
    *,
    status_code: int | None = None,
    encode: Encode | None = None,
) -> tuple[Handler, EndpointSpec]:
    """Compile `endpoint` (a function or an HTTPController class) for one HTTP method.

    Returns the ASGI handler and what the endpoint takes and answers. `finish`, when given,
    may change every response before it is sent (default headers); `guard`, when given, may
    refuse a request before the endpoint runs; `on_error`, when given, answers what the
    endpoint raises (without it, the exception propagates). `status_code` is the status of a
    returned value; `encode` the app's JSON encoder.
    """
    answer = _answerer(status_code, encode)
    if _is_controller(endpoint):
        func = getattr(endpoint, method.lower())
        plan = container.plan(func, path_params=path_params, context=(Request,), skip=1, bodies=True)
        spec = _spec(plan, func, status_code)
        return _controller_handler(endpoint, func, plan, finish, guard, on_error, answer), spec
    if not callable(endpoint):
        raise ConfigurationError(f"endpoint {endpoint!r} is neither a function nor an HTTPController")
    if not inspect.iscoroutinefunction(endpoint):
        raise ConfigurationError(
            f"endpoint {getattr(endpoint, '__qualname__', endpoint)!r} must be an async function (async def)"
        )
    plan = container.plan(endpoint, path_params=path_params, context=(Request,), bodies=True)
    spec = _spec(plan, endpoint, status_code)
    if not plan.params and not plan.request_params:
        handler = plain_endpoint(
            endpoint, finish, guard, on_error, answer, status_code=status_code, encode=encode
        )
        return handler, spec
    if not plan.needs_container:
        handler = direct_handler(
            endpoint, plan, finish, guard, on_error, answer, status_code=status_code, encode=encode
        )
        return handler, spec
    return _function_handler(endpoint, plan, finish, guard, on_error, answer), spec


def _spec(plan: CallPlan, func: Callable[..., Any], status_code: int | None) -> EndpointSpec:
    try:
        returns = typing.get_type_hints(func, include_extras=True).get("return", MISSING)
    except Exception:  # noqa: BLE001 - the plan has resolved the parameters; a bad return hint is only not described
        returns = MISSING
    return EndpointSpec(tuple(plan.request_params), returns, status_code)


def _answerer(status_code: int | None, encode: Encode | None) -> Callable[..., Response]:
    """`to_response`, or one that encodes with the app's encoder and answers `status_code`."""
    if status_code is None and encode is None:
        return to_response

    def answer(value: Any, kept: Response | None = None) -> Response:
        response = to_response(value, kept, encode)
        if status_code is None or isinstance(value, Response | tuple) or response is kept:
            return response
        if value is None:
            return Response(b"", status_code)
        response.status = status_code
        return response

    return answer


def _function_handler(
    endpoint: Callable[..., Any],
    plan: CallPlan,
    finish: Finisher | None,
    guard: Guard | None,
    on_error: ErrorAnswer | None,
    answer: Callable[..., Response],
) -> Handler:
    targets = (endpoint,)
    needs_path = plan.takes_path_params

    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            # checked on every request, so `@requires_auth` works above or below the route decorator
            refusal = refusal_of(targets, scope, guard)
            if refusal is not None:
                await refuse(refusal[0], scope, receive, send, finish, refusal[1])
                return
            request = Request(scope, receive)
            resolver = ResolutionScope(scope["app"].container, connection=request)
            try:
                path = scope["path_params"] if needs_path else None
                kwargs = plan.kwargs(resolver, {Request: request}, path)
                if not isinstance(kwargs, dict):
                    kwargs = await kwargs
                response = answer(await endpoint(**kwargs))
                if finish is not None:
                    finish(response, scope)
                await response(scope, receive, send)
            finally:
                if resolver.holds_values:
                    await resolver.aclose()
                await request.close()
        except Exception as exc:  # the boundary that runs user code: answered after teardown
            if on_error is None:
                raise
            await on_error(exc, scope, receive, send)

    return handle


def _controller_handler(
    cls: type[HTTPController],
    func: Callable[..., Any],
    plan: CallPlan,
    finish: Finisher | None,
    guard: Guard | None,
    on_error: ErrorAnswer | None,
    answer: Callable[..., Response],
) -> Handler:
    targets = (cls, func)

    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            refusal = refusal_of(targets, scope, guard)
            if refusal is not None:
                await refuse(refusal[0], scope, receive, send, finish, refusal[1])
                return
            request = Request(scope, receive)
            controller = cls(request)
            resolver = ResolutionScope(scope["app"].container, connection=request)
            try:
                try:
                    kwargs = plan.kwargs(resolver, {Request: request}, scope["path_params"])
                    if not isinstance(kwargs, dict):
                        kwargs = await kwargs
                except RequestValidationError as exc:
                    result = await controller.on_invalid_input(exc)
                else:
                    result = await func(controller, **kwargs)
                response = answer(result, controller._response)
                if finish is not None:
                    finish(response, scope)
                await response(scope, receive, send)
            finally:
                if resolver.holds_values:
                    await resolver.aclose()
                await request.close()
        except Exception as exc:  # the boundary that runs user code: answered after teardown
            if on_error is None:
                raise
            await on_error(exc, scope, receive, send)

    return handle

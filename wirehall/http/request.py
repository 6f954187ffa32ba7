"""The HTTP request: what the client sent, read lazily from the scope and the body stream."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import msgspec

from wirehall._decoding import DECODE_ERRORS, failure
from wirehall.connection import Connection
from wirehall.errors import HTTPError
from wirehall.http.forms import FormData, parse_form
from wirehall.params import RequestValidationError
from wirehall.types import Message, Receive, Scope

__all__ = ["DEFAULT_MAX_BODY_SIZE", "Request"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
DEFAULT_MAX_BODY_SIZE = 1024 * 1024
_DECODER = msgspec.json.Decoder()


class ClientDisconnectedError(HTTPError):
    """The client went away while we were reading its body."""

    def __init__(self) -> None:
        super().__init__(400, "client disconnected")


class Request(Connection):
    """One HTTP request. Path parameters, query, headers and cookies as on `Connection`."""

    __slots__ = ("_body", "_consumed", "_form", "_limit", "receive")

    def __init__(self, scope: Scope, receive: Receive, *, max_body_size: int | None = None) -> None:
        super().__init__(scope)
        self.receive = receive
        self._body: bytes | None = None
        self._consumed = False
        self._form: FormData | None = None
        self._limit = max_body_size

    @property
    def max_body_size(self) -> int:
        """The largest body this request may have (the app's `max_body_size` by default)."""
        if self._limit is None:
            app = self.scope.get("app")
            self._limit = getattr(app, "max_body_size", DEFAULT_MAX_BODY_SIZE)
        return self._limit

    @property
    def method(self) -> str:
        """The HTTP method, upper case."""
        return self.scope["method"]  # type: ignore[no-any-return]

    @property
    def path(self) -> str:
        """The path below the app's mount point."""
        return self.scope["path"]  # type: ignore[no-any-return]

    def url_for(self, name: str, /, **params: Any) -> str:
        """The absolute URL of the route called `name`."""
        path = self.app.url_path_for(name, **params)
        return str(self.url.replace(path=self.scope.get("root_path", "") + path, query=""))

    async def stream(self) -> AsyncIterator[bytes]:
        """The body in chunks as they arrive, enforcing the size limit (413)."""
        if self._body is not None:
            yield self._body
            return
        if self._consumed:
            raise HTTPError(500, "the request body was already streamed")
        self._consumed = True
        declared = self.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_size:
            raise HTTPError(413, f"request body is larger than {self.max_body_size} bytes")
        size = 0
        while True:
            message = await self.receive()
            kind = message["type"]
            if kind == "http.request":
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.max_body_size:
                    raise HTTPError(413, f"request body is larger than {self.max_body_size} bytes")
                if chunk:
                    yield chunk
                if not message.get("more_body", False):
                    return
            elif kind == "http.disconnect":
                raise ClientDisconnectedError()

    async def body(self) -> bytes:
        """The whole body (at most `max_body_size` bytes, else HTTPError 413)."""
        if self._body is not None:
            return self._body
        if self._consumed:
            raise HTTPError(500, "the request body was already streamed")
        # what stream() does, without an async generator: a body is usually one message
        self._consumed = True
        limit = self.max_body_size
        for name, value in self.scope.get("headers", ()):
            if name == b"content-length":
                if value.isdigit() and int(value) > limit:
                    raise HTTPError(413, f"request body is larger than {limit} bytes")
                break
        message = await self.receive()
        if message["type"] == "http.request" and not message.get("more_body", False):
            body: bytes = message.get("body", b"")  # the whole body in one message: the usual case
            if len(body) > limit:
                raise HTTPError(413, f"request body is larger than {limit} bytes")
            self._body = body
            return body
        self._body = await self._gather(message, limit)
        return self._body

    async def _gather(self, message: Message, limit: int) -> bytes:
        """The body sent over several messages, starting with `message`: `body()`'s rarer case."""
        chunks: list[bytes] = []
        size = 0
        while True:
            kind = message["type"]
            if kind == "http.request":
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise HTTPError(413, f"request body is larger than {limit} bytes")
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
            elif kind == "http.disconnect":
                raise ClientDisconnectedError()
            message = await self.receive()
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def json(self) -> Any:
        """The body parsed as JSON; not JSON -> HTTPError 400 with what was wrong."""
        body = await self.body()
        if not body.strip():
            raise HTTPError(400, "the request body is empty; send a JSON document")
        try:
            return _DECODER.decode(body)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise HTTPError(400, f"the request body is not valid JSON: {exc}") from exc

    async def json_as(self, type_: type[T]) -> T:
        """The body decoded and validated as `type_` (a msgspec Struct, dataclass, ...).

        Not JSON -> 400; JSON of the wrong shape -> 422 saying which field is wrong.
        """
        body = await self.body()
        if not body.strip():
            raise HTTPError(400, "the request body is empty; send a JSON document")
        try:
            return msgspec.json.decode(body, type=type_)  # one pass, straight into the type
        except DECODE_ERRORS as exc:
            found = failure(exc)
            if found.malformed:
                raise HTTPError(400, f"the request body is not valid JSON: {found.message}") from exc
            raise RequestValidationError([{"loc": ["body", *found.loc], "msg": found.message}]) from exc

    async def form(self, *, max_files: int = 100, max_fields: int = 1000) -> FormData:
        """The urlencoded or multipart form, uploads spooled to temporary files."""
        if self._form is None:
            content_type = self.headers.get("content-type", "")
            self._form = await parse_form(
                content_type, self.stream(), max_files=max_files, max_fields=max_fields
            )
        return self._form

    @property
    def holds_files(self) -> bool:
        """Whether `close` has something to do (a form was read: its uploads to close)."""
        return self._form is not None

    async def close(self) -> None:
        """Close uploaded files of the form, if one was read."""
        if self._form is not None:
            await self._form.close()

    async def is_disconnected(self) -> bool:
        """Whether the client has gone (only meaningful once the body is read)."""
        if not self._consumed and self._body is None:
            return False
        try:
            message = await asyncio.wait_for(self.receive(), timeout=0.001)
        except TimeoutError:
            return False
        return message.get("type") == "http.disconnect"

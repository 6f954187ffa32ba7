"""HTTP responses: text, HTML, JSON, redirects, streams and files."""

from __future__ import annotations

import asyncio
import hashlib
import mimetypes
import os
import stat
from collections.abc import AsyncIterable, Iterable, Mapping
from email.utils import formatdate, parsedate_to_datetime
from http import HTTPStatus
from typing import Any, Literal
from urllib.parse import quote

import msgspec

from wirehall.datastructures import Headers
from wirehall.types import Receive, Scope, Send

__all__ = [
    "FileResponse",
    "HTMLResponse",
    "JSONResponse",
    "PlainTextResponse",
    "RedirectResponse",
    "Response",
    "StreamingResponse",
    "error_response",
]

_ENCODER = msgspec.json.Encoder()
_CHUNK = 64 * 1024


class Response:
    """A complete response with a bytes body. Subclasses set `media_type`."""

    media_type: str | None = None
    charset = "utf-8"

    def __init__(
        self,
        content: Any = b"",
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        media_type: str | None = None,
    ) -> None:
        self.status = status
        body = self.body = self.render(content)
        if media_type is not None:
            self.media_type = media_type
        if headers is None:  # the common case, kept short: it runs on every response
            raw = (
                [(b"content-length", str(len(body)).encode())]
                if status >= 200 and status not in (204, 304)
                else []
            )
            if self.media_type is not None:
                raw.append((b"content-type", _content_type(self.media_type, self.charset)))
            self.raw_headers = raw
            return
        self.raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        self._finish_headers()

    def render(self, content: Any) -> bytes:
        """Turn `content` into the body bytes."""
        if isinstance(content, bytes):
            return content
        if isinstance(content, str):
            return content.encode(self.charset)
        if content is None:
            return b""
        raise TypeError(f"{type(self).__name__} cannot send {type(content).__name__}; pass str or bytes")

    def _finish_headers(self) -> None:
        raw = self.raw_headers
        names = {name for name, _ in raw}
        if b"content-length" not in names and self.status not in (204, 304) and self.status >= 200:
            raw.append((b"content-length", str(len(self.body)).encode()))
        if self.media_type is not None and b"content-type" not in names:
            raw.append((b"content-type", _content_type(self.media_type, self.charset)))

    def add_default_headers(self, defaults: Iterable[tuple[bytes, bytes]]) -> None:
        """Add each of `defaults` whose name the response does not already carry."""
        names = {name for name, _ in self.raw_headers}
        self.raw_headers.extend(item for item in defaults if item[0] not in names)

    @property
    def headers(self) -> Headers:
        """The response headers (a live read-only view)."""
        return Headers(self.raw_headers)

    def set_header(self, name: str, value: str) -> None:
        """Set `name` to `value`, replacing earlier values."""
        key = name.lower().encode("latin-1")
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != key]
        self.raw_headers.append((key, value.encode("latin-1")))

    def set_cookie(
        self,
        key: str,
        value: str = "",
        *,
        max_age: int | None = None,
        expires: int | None = None,
        path: str = "/",
        domain: str | None = None,
        secure: bool = False,
        httponly: bool = True,
        samesite: Literal["lax", "strict", "none"] | None = "lax",
    ) -> None:
        """Add a `Set-Cookie` header."""
        parts = [f"{key}={quote(value, safe='')}", f"Path={path}"]
        if max_age is not None:
            parts.append(f"Max-Age={max_age}")
        if expires is not None:
            parts.append(f"Expires={formatdate(expires, usegmt=True)}")
        if domain:
            parts.append(f"Domain={domain}")
        if secure:
            parts.append("Secure")
        if httponly:
            parts.append("HttpOnly")
        if samesite:
            parts.append(f"SameSite={samesite.capitalize()}")
        self.raw_headers.append((b"set-cookie", "; ".join(parts).encode("latin-1")))

    def delete_cookie(self, key: str, *, path: str = "/", domain: str | None = None) -> None:
        """Tell the client to forget cookie `key`."""
        self.set_cookie(key, "", max_age=0, expires=0, path=path, domain=domain)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.raw_headers})
        body = b"" if scope.get("method") == "HEAD" else self.body
        await send({"type": "http.response.body", "body": body})

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status})"


_CONTENT_TYPES: dict[tuple[str, str], bytes] = {}


def _content_type(media_type: str, charset: str) -> bytes:
    value = _CONTENT_TYPES.get((media_type, charset))
    if value is None:
        text = media_type
        if media_type.startswith("text/") and "charset" not in media_type:
            text += f"; charset={charset}"
        value = _CONTENT_TYPES[(media_type, charset)] = text.encode("latin-1")
    return value


class PlainTextResponse(Response):
    """`text/plain` in UTF-8."""

    media_type = "text/plain"


class HTMLResponse(Response):
    """`text/html` in UTF-8."""

    media_type = "text/html"


class JSONResponse(Response):
    """JSON encoded with msgspec: dicts, lists, Structs, dataclasses, datetimes, UUIDs..."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        try:
            return _ENCODER.encode(content)
        except (TypeError, msgspec.EncodeError) as exc:
            raise TypeError(f"cannot encode {type(content).__name__} as JSON: {exc}") from exc


class RedirectResponse(Response):
    """A redirect (307 by default, which keeps the method)."""

    def __init__(self, url: str, status: int = 307, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(b"", status, headers)
        self.raw_headers.append((b"location", quote(url, safe=":/%#?=@[]!$&'()*+,;~").encode("latin-1")))


class StreamingResponse(Response):
    """A body produced chunk by chunk by an (async) iterable of bytes or str."""

    def __init__(
        self,
        content: AsyncIterable[bytes | str] | Iterable[bytes | str],
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        media_type: str | None = None,
    ) -> None:
        self.iterator = content
        super().__init__(b"", status, headers, media_type)
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]

    async def _chunks(self) -> AsyncIterable[bytes]:
        if isinstance(self.iterator, AsyncIterable):
            async for chunk in self.iterator:
                yield chunk.encode(self.charset) if isinstance(chunk, str) else chunk
        else:
            for chunk in self.iterator:
                yield chunk.encode(self.charset) if isinstance(chunk, str) else chunk

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.raw_headers})
        if scope.get("method") != "HEAD":
            async for chunk in self._chunks():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


class FileResponse(Response):
    """A file streamed from disk with ETag / Last-Modified, 304 and single Range (206)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        media_type: str | None = None,
        filename: str | None = None,
        stat_result: os.stat_result | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.filename = filename
        if media_type is None:
            media_type = mimetypes.guess_type(filename or self.path)[0] or "application/octet-stream"
        self.stat_result = stat_result
        super().__init__(b"", status, headers, media_type)
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        if filename is not None:
            self.raw_headers.append(
                (
                    b"content-disposition",
                    f"attachment; filename*=UTF-8''{quote(filename)}".encode("latin-1"),
                )
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            info = (
                self.stat_result
                if self.stat_result is not None
                else await asyncio.to_thread(os.stat, self.path)
            )
        except OSError:
            await error_response(404, "file not found")(scope, receive, send)
            return
        if not stat.S_ISREG(info.st_mode):
            await error_response(404, "file not found")(scope, receive, send)
            return
        size = info.st_size
        etag = (
            '"' + hashlib.md5(f"{info.st_mtime_ns}-{size}".encode(), usedforsecurity=False).hexdigest() + '"'
        )
        last_modified = formatdate(info.st_mtime, usegmt=True)
        request_headers = Headers(scope.get("headers", ()))
        headers = [
            *self.raw_headers,
            (b"etag", etag.encode()),
            (b"last-modified", last_modified.encode()),
            (b"accept-ranges", b"bytes"),
        ]
        if _not_modified(request_headers, etag, info.st_mtime):
            headers = [(k, v) for k, v in headers if k != b"content-type"]
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        start, end, status = 0, size, self.status
        range_header = request_headers.get("range")
        if range_header is not None and _if_range_ok(request_headers, etag, last_modified):
            parsed = _parse_range(range_header, size)
            if parsed == "unsatisfiable":
                refusal = error_response(
                    416,
                    f"the requested range is outside the file ({size} bytes)",
                    {"Content-Range": f"bytes */{size}"},
                )
                await refusal(scope, receive, send)
                return
            if parsed is not None:
                start, end = parsed
                status = 206
                headers.append((b"content-range", f"bytes {start}-{end - 1}/{size}".encode()))
        headers.append((b"content-length", str(end - start).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        if scope.get("method") == "HEAD":
            await send({"type": "http.response.body", "body": b""})
            return
        with open(self.path, "rb") as handle:  # noqa: ASYNC230 - reads go through a thread below
            await asyncio.to_thread(handle.seek, start)
            remaining = end - start
            while remaining > 0:
                chunk = await asyncio.to_thread(handle.read, min(_CHUNK, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": remaining > 0})
        if remaining > 0:  # the file shrank while we sent it
            await send({"type": "http.response.body", "body": b""})


def _not_modified(headers: Headers, etag: str, mtime: float) -> bool:
    if_none_match = headers.get("if-none-match")
    if if_none_match is not None:
        tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
        return "*" in tags or etag in tags
    if_modified_since = headers.get("if-modified-since")
    if if_modified_since:
        try:
            since = parsedate_to_datetime(if_modified_since).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return False
        return int(mtime) <= since
    return False


def _if_range_ok(headers: Headers, etag: str, last_modified: str) -> bool:
    if_range = headers.get("if-range")
    return if_range is None or if_range in (etag, last_modified)


def _parse_range(header: str, size: int) -> tuple[int, int] | Literal["unsatisfiable"] | None:
    """One byte range as (start, end exclusive); None to ignore the header (send it all)."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None  # other units and multiple ranges: the whole file is a valid answer
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if first == "":
            if not last.isdigit():
                return None
            length = int(last)
            if length == 0:
                return "unsatisfiable"
            return max(size - length, 0), size
        if not first.isdigit() or (last and not last.isdigit()):
            return None
        start = int(first)
        end = int(last) + 1 if last else size
    except ValueError:
        return None
    if start >= size or start >= end:
        return "unsatisfiable"
    return start, min(end, size)


def error_response(
    status: int, detail: str | None = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The JSON error body every wirehall error uses: `{"error": detail}`."""
    if detail is None:
        try:
            detail = HTTPStatus(status).phrase
        except ValueError:
            detail = "error"
    return JSONResponse({"error": detail}, status, headers)

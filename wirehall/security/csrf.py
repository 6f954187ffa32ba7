"""Cross-site request forgery protection with a double-submit token.

A random token lives in a cookie that scripts on the page may read (not HttpOnly). A
request with an unsafe method that carries cookies must send the same token back, in
a header or a form field. Another site can make the browser send the cookie, but it
can neither read it nor guess it, so it cannot send the matching value.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
from collections import deque
from collections.abc import Iterable
from datetime import timedelta

from wirehall.errors import ConfigurationError
from wirehall.security._forms import MultipartField, parse_options_header, urlencoded_field
from wirehall.security._responses import send_json_error
from wirehall.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CSRFMiddleware"]

logger = logging.getLogger(__name__)

_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)
_FORBIDDEN = "CSRF token missing or invalid"
_URLENCODED = b"application/x-www-form-urlencoded"
_MULTIPART = b"multipart/form-data"


class CSRFMiddleware:
    """Require the CSRF token on unsafe requests that carry cookies.

    Args:
        cookie_name: the token cookie (`__Host-csrftoken` also stops sibling subdomains
            from planting their own token, but needs https).
        header_name: where scripts send the token (read the cookie, copy it here).
        form_field: where HTML forms send it (`<input type=hidden name=csrf_token
            value="{{ csrf_token }}">`); urlencoded and multipart forms are read.
        safe_methods: methods never checked; they must not change anything.
        exempt_paths: paths never checked: `/hooks/github` exactly, or every path under
            `/hooks/` when the entry ends with `/`.
        max_body_size: how much of a form body is buffered while looking for the field
            (413 beyond it; put the field first in multipart forms with large files).

    A request without any cookie is not checked: a browser attack rides on the
    cookies the browser adds by itself, and API clients using bearer tokens send none.
    The token is in `scope["csrf_token"]`; a missing cookie is set on the response.
    A failed check gets 403 `{"error": "CSRF token missing or invalid"}`. WebSocket
    handshakes are not checked here (see `WebSocketOriginMiddleware`).
    """

    __slots__ = (
        "_cookie_key",
        "_exact",
        "_header",
        "_prefixes",
        "_suffix_plain",
        "_suffix_secure",
        "app",
        "cookie_name",
        "cookie_secure",
        "form_field",
        "max_body_size",
        "safe_methods",
    )

    def __init__(
        self,
        app: ASGIApp,
        *,
        cookie_name: str = "csrftoken",
        header_name: str = "x-csrf-token",
        form_field: str = "csrf_token",
        safe_methods: Iterable[str] = ("GET", "HEAD", "OPTIONS", "TRACE"),
        exempt_paths: Iterable[str] = (),
        cookie_secure: bool | None = None,
        cookie_path: str = "/",
        cookie_domain: str | None = None,
        cookie_max_age: int | timedelta = timedelta(days=365),
        max_body_size: int = 1024 * 1024,
    ) -> None:
        if not cookie_name or not all(c.isalnum() or c in "-_." for c in cookie_name):
            raise ConfigurationError(f"cookie_name={cookie_name!r} must be letters, digits, '-', '_' or '.'")
        if not header_name or not form_field:
            raise ConfigurationError("header_name and form_field must not be empty")
        if cookie_name.startswith("__Host-"):
            if cookie_secure is False or cookie_domain or cookie_path != "/":
                raise ConfigurationError(
                    f"a {cookie_name!r} cookie must be Secure, with Path=/ and no Domain"
                )
            cookie_secure = True
        if isinstance(cookie_max_age, timedelta):
            cookie_max_age = int(cookie_max_age.total_seconds())
        self.app = app
        self.cookie_name = cookie_name
        self.cookie_secure = cookie_secure
        self.form_field = form_field
        self.safe_methods = frozenset(method.upper() for method in safe_methods)
        self.max_body_size = max_body_size
        self._cookie_key = cookie_name + "="
        self._header = header_name.lower().encode("latin-1")
        exempt = list(exempt_paths)
        self._exact = frozenset(path for path in exempt if not path.endswith("/"))
        self._prefixes = tuple(path for path in exempt if path.endswith("/"))
        attrs = f"; Path={cookie_path}; Max-Age={cookie_max_age}; SameSite=Lax"
        if cookie_domain:
            attrs += f"; Domain={cookie_domain}"
        self._suffix_plain = attrs.encode("latin-1")
        self._suffix_secure = self._suffix_plain + b"; Secure"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        cookie_header, submitted, content_type = self._read_headers(scope)
        token = self._cookie_token(cookie_header) if cookie_header else None
        if token is None:
            token = secrets.token_urlsafe(32)
            send = self._setting_cookie(scope, send, token)
            fresh = True
        else:
            fresh = False
        scope["csrf_token"] = token

        if (
            scope["method"] in self.safe_methods
            or not cookie_header
            or not cookie_header.strip()
            or self._is_exempt(scope["path"])
        ):
            await self.app(scope, receive, send)
            return

        if fresh:
            await self._forbid(scope, send, "no CSRF cookie")
            return
        if submitted is None:
            from_form = await self._form_token(content_type, receive, send)
            if from_form is None:
                return  # answered already, or the client went away
            submitted, receive = from_form
        if submitted is None:
            await self._forbid(scope, send, "no CSRF token sent")
            return
        if not hmac.compare_digest(submitted, token.encode("ascii")):
            await self._forbid(scope, send, "CSRF token mismatch")
            return
        await self.app(scope, receive, send)

    def _read_headers(self, scope: Scope) -> tuple[str | None, bytes | None, bytes]:
        """The cookies (joined), the token header's value and the Content-Type of a request."""
        cookie_header: str | None = None
        submitted: bytes | None = None
        content_type = b""
        for key, value in scope.get("headers", ()):
            if key == b"cookie":
                text = value.decode("latin-1")
                cookie_header = text if cookie_header is None else f"{cookie_header}; {text}"
            elif key == self._header:
                if submitted is None:
                    submitted = value.strip()
            elif key == b"content-type":
                content_type = value
        return cookie_header, submitted, content_type

    async def _form_token(
        self, content_type: bytes, receive: Receive, send: Send
    ) -> tuple[bytes | None, Receive] | None:
        """The token sent in a form body, and a `receive` replaying what was read for it.

        None when the request is answered here (413) or the client went away.
        """
        media_type, options = parse_options_header(content_type)
        if media_type not in (_URLENCODED, _MULTIPART):
            return None, receive
        outcome = await self._read_form_token(receive, media_type, options)
        if outcome is None:
            return None
        if isinstance(outcome, int):
            await send_json_error(
                send,
                413,
                "form too large to find the CSRF token; send it in the "
                f"{self._header.decode()} header or as the first form field",
            )
            return None
        submitted, buffered = outcome
        return submitted, _replay(buffered, receive)

    def _cookie_token(self, header: str) -> str | None:
        if self._cookie_key not in header:
            return None
        for chunk in header.split(";"):
            name, sep, value = chunk.partition("=")
            if sep and name.strip() == self.cookie_name:
                value = value.strip()
                if _TOKEN.fullmatch(value):
                    return value
        return None

    def _is_exempt(self, path: str) -> bool:
        return path in self._exact or (bool(self._prefixes) and path.startswith(self._prefixes))

    def _setting_cookie(self, scope: Scope, send: Send, token: str) -> Send:
        secure = self.cookie_secure
        if secure is None:
            secure = scope.get("scheme") == "https"
        header = f"{self.cookie_name}={token}".encode("latin-1") + (
            self._suffix_secure if secure else self._suffix_plain
        )

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = [*message.get("headers", ()), (b"set-cookie", header)]
            await send(message)

        return send_with_cookie

    async def _forbid(self, scope: Scope, send: Send, reason: str) -> None:
        logger.info("refused %s %s: %s", scope.get("method"), scope.get("path"), reason)
        await send_json_error(send, 403, _FORBIDDEN)

    async def _read_form_token(
        self, receive: Receive, media_type: bytes, options: dict[bytes, bytes]
    ) -> tuple[bytes | None, list[Message]] | int | None:
        """Buffer the body until the form field is found: (token, messages), 413, or None."""
        field = self.form_field.encode()
        multipart: MultipartField | None = None
        if media_type == _MULTIPART:
            boundary = options.get(b"boundary")
            if not boundary:
                return None, []
            multipart = MultipartField(boundary, field)
        buffered: list[Message] = []
        size = 0
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None  # http.disconnect
            buffered.append(message)
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            more = bool(message.get("more_body", False))
            if multipart is not None:
                try:
                    multipart.write(chunk)
                except ValueError:
                    return None, buffered  # malformed form: no token; the app sees it too
                if multipart.done or not more:
                    return multipart.value, buffered
            else:
                body += chunk
                if not more:
                    return urlencoded_field(bytes(body), field), buffered
            if size > self.max_body_size:
                return 413


def _replay(buffered: list[Message], receive: Receive) -> Receive:
    pending = deque(buffered)

    async def replay() -> Message:
        if pending:
            return pending.popleft()
        return await receive()

    return replay

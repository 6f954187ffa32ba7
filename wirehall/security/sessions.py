"""Signed-cookie sessions: `scope["session"]` is a dict kept in a cookie the client cannot forge.

The cookie holds the session as JSON, base64url-encoded and signed with a timestamp
(itsdangerous `TimestampSigner`, HMAC-SHA256). It is readable by the client, so keep
secrets out of it; it cannot be changed without the secret key.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Literal

import msgspec
from itsdangerous import BadData, TimestampSigner
from itsdangerous.encoding import base64_decode, base64_encode

from wirehall.datastructures import parse_cookies
from wirehall.errors import ConfigurationError
from wirehall.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["SessionMiddleware"]

logger = logging.getLogger(__name__)

_SALT = b"wirehall.session"
_BROWSER_COOKIE_LIMIT = 4096
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(dict[str, Any]).decode
_SAME_SITE = {"lax": "Lax", "strict": "Strict", "none": "None"}


class SessionMiddleware:
    """Load `scope["session"]` from a signed cookie; save it when the response starts.

    Args:
        secret_key: one key, or several for rotation: the first signs, all verify.
            A session signed with an older key is re-signed with the first on the next
            HTTP response, so an old key can be dropped after `max_age`.
        max_age: seconds (or a timedelta) a session lives after it was last saved;
            None makes a browser-session cookie with no server-side expiry.
        same_site: "lax", "strict" or "none" (which forces Secure).
        https_only: mark the cookie Secure; None marks it Secure on https/wss requests.

    A forged, tampered, expired or malformed cookie gives an empty session, never an error.
    The cookie is sent only when the session changed (compared as JSON, so nested
    changes count), and deleted when the session was emptied. WebSocket handshakes
    read the session, but nothing written to it during a WebSocket is saved.
    """

    __slots__ = (
        "_cookie_key",
        "_delete_plain",
        "_delete_secure",
        "_max_age",
        "_primary",
        "_signer",
        "_suffix_plain",
        "_suffix_secure",
        "app",
        "cookie_name",
        "https_only",
    )

    def __init__(
        self,
        app: ASGIApp,
        secret_key: str | Sequence[str],
        *,
        cookie_name: str = "session",
        max_age: int | timedelta | None = 14 * 24 * 3600,
        same_site: Literal["lax", "strict", "none"] = "lax",
        https_only: bool | None = None,
        path: str = "/",
        domain: str | None = None,
    ) -> None:
        keys = [secret_key] if isinstance(secret_key, str) else list(secret_key)
        if not keys or not all(isinstance(key, str) and key for key in keys):
            raise ConfigurationError(
                f"SessionMiddleware secret_key={secret_key!r} must be a non-empty string or a "
                "list of them (the first signs, all verify)"
            )
        if not cookie_name or not all(c.isalnum() or c in "-_." for c in cookie_name):
            raise ConfigurationError(f"cookie_name={cookie_name!r} must be letters, digits, '-', '_' or '.'")
        site = _SAME_SITE.get(str(same_site).lower())
        if site is None:
            raise ConfigurationError(f"same_site={same_site!r}; use 'lax', 'strict' or 'none'")
        if site == "None":
            if https_only is False:
                raise ConfigurationError(
                    "same_site='none' needs a Secure cookie (browsers reject it otherwise); "
                    "leave https_only unset or True"
                )
            https_only = True
        if isinstance(max_age, timedelta):
            max_age = int(max_age.total_seconds())
        if max_age is not None and max_age <= 0:
            raise ConfigurationError(f"max_age={max_age!r} must be positive seconds or None")

        self.app = app
        self.cookie_name = cookie_name
        self.https_only = https_only
        self._max_age = max_age
        self._cookie_key = cookie_name + "="
        # itsdangerous signs with the *last* key and verifies newest to oldest
        self._signer = TimestampSigner(list(reversed(keys)), salt=_SALT, digest_method=hashlib.sha256)
        self._primary = TimestampSigner(keys[0], salt=_SALT, digest_method=hashlib.sha256)

        attrs = f"; Path={path}"
        if domain:
            attrs += f"; Domain={domain}"
        tail = f"; HttpOnly; SameSite={site}"
        keep = attrs + (f"; Max-Age={max_age}" if max_age is not None else "") + tail
        gone = attrs + "; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT" + tail
        self._suffix_plain = keep
        self._suffix_secure = keep + "; Secure"
        self._delete_plain = f"{cookie_name}=".encode() + gone.encode("latin-1")
        self._delete_secure = self._delete_plain + b"; Secure"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return

        raw = self._read_cookie(scope)
        loaded: bytes | None = None  # the JSON the cookie carried, when it was valid
        stale = False  # signed with an older key: re-sign on the next response
        session: dict[str, Any] = {}
        if raw is not None:
            result = self._load(raw)
            if result is not None:
                session, loaded, stale = result
        scope["session"] = session

        if kind == "websocket":
            await self.app(scope, receive, send)
            return

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                header = self._header_for(scope, raw is not None, loaded, stale)
                if header is not None:
                    message = dict(message)
                    message["headers"] = [*message.get("headers", ()), (b"set-cookie", header)]
            await send(message)

        await self.app(scope, receive, send_with_cookie)

    def _read_cookie(self, scope: Scope) -> str | None:
        for key, value in scope.get("headers", ()):
            if key == b"cookie":
                text = value.decode("latin-1")
                if self._cookie_key in text:
                    found = parse_cookies(text).get(self.cookie_name)
                    if found is not None:
                        return found
        return None

    def _load(self, raw: str) -> tuple[dict[str, Any], bytes, bool] | None:
        try:
            token = raw.encode("latin-1")
            stale = False
            try:
                encoded = self._primary.unsign(token, max_age=self._max_age)
            except BadData:
                encoded = self._signer.unsign(token, max_age=self._max_age)
                stale = True
            payload = base64_decode(encoded)
            return _decode(payload), payload, stale
        except (BadData, UnicodeError, msgspec.DecodeError, ValueError):
            # forged, tampered, expired or malformed: an empty session, never an error
            return None

    def _header_for(self, scope: Scope, had_cookie: bool, loaded: bytes | None, stale: bool) -> bytes | None:
        session = scope.get("session")
        secure = self.https_only
        if secure is None:
            secure = scope.get("scheme") in ("https", "wss")
        if not session:
            if had_cookie:
                return self._delete_secure if secure else self._delete_plain
            return None
        if not isinstance(session, dict):
            raise TypeError(f'scope["session"] must be a dict, got {type(session).__name__}')
        try:
            payload = _encode(session)
        except (TypeError, msgspec.EncodeError) as exc:
            raise TypeError(f"session values must be JSON-serialisable: {exc}") from exc
        if payload == loaded and not stale:
            return None
        token = self._primary.sign(base64_encode(payload)).decode("ascii")
        suffix = self._suffix_secure if secure else self._suffix_plain
        header = f"{self.cookie_name}={token}{suffix}".encode("latin-1")
        if len(header) > _BROWSER_COOKIE_LIMIT:
            logger.warning(
                "session cookie %r is %d bytes; browsers drop cookies over %d bytes",
                self.cookie_name,
                len(header),
                _BROWSER_COOKIE_LIMIT,
            )
        return header

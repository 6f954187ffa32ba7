"""Cross-origin resource sharing: which other sites' scripts may call this app over HTTP."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from wirehall.errors import ConfigurationError
from wirehall.security._netloc import Origin, parse_origin
from wirehall.security._responses import send_json_error
from wirehall.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CORSMiddleware"]

logger = logging.getLogger(__name__)

# request headers a browser sends cross-origin without asking (the CORS safelist)
_SAFELISTED_HEADERS = frozenset({"accept", "accept-language", "content-language", "content-type"})


class CORSMiddleware:
    """Answer CORS preflights and add `Access-Control-*` headers to cross-origin responses.

    Args:
        allow_origins: origins like `https://app.example.com`, or `*` for any.
        allow_methods: methods other sites may use (`*` for any).
        allow_headers: request headers they may send besides the safelisted ones
            (`*` for any).
        allow_credentials: let them send cookies / HTTP auth. The origin is then echoed
            back, never `*` (browsers refuse `*` with credentials). Not allowed together
            with `*` in `allow_origins` (`ConfigurationError`): every site could then read
            what signed-in users see; list the origins instead.
        expose_headers: response headers their scripts may read.
        max_age: seconds a browser may cache a preflight answer.
        allow_origin_regex: also allow origins matching this regular expression
            (matched against the whole origin, e.g. `https://.*\\.example\\.com`).

    A preflight (OPTIONS with `Origin` and `Access-Control-Request-Method`) is answered
    here: 200 with the allowed methods and headers, or 400 JSON when the origin,
    method or a header is not allowed. Other requests reach the app; when their origin
    is allowed the response gets `Access-Control-Allow-Origin`. When the answer
    depends on the origin, every response carries `Vary: Origin` so caches keep them apart.
    """

    __slots__ = (
        "_allow_all_headers",
        "_allow_all_methods",
        "_allow_all_origins",
        "_allowed_headers",
        "_exact_parsed",
        "_exact_raw",
        "_origin_regex",
        "_preflight_static",
        "_simple_static",
        "_varies",
        "allow_credentials",
        "allow_methods",
        "app",
    )

    def __init__(
        self,
        app: ASGIApp,
        allow_origins: Iterable[str] = (),
        allow_methods: Iterable[str] = ("GET",),
        allow_headers: Iterable[str] = (),
        allow_credentials: bool = False,
        expose_headers: Iterable[str] = (),
        max_age: int = 600,
        allow_origin_regex: str | None = None,
    ) -> None:
        origins = [allow_origins] if isinstance(allow_origins, str) else list(allow_origins)
        methods = [allow_methods] if isinstance(allow_methods, str) else list(allow_methods)
        headers = [allow_headers] if isinstance(allow_headers, str) else list(allow_headers)
        exposed = [expose_headers] if isinstance(expose_headers, str) else list(expose_headers)
        if allow_credentials and "*" in origins:
            raise ConfigurationError(
                "CORSMiddleware(allow_origins=['*'], allow_credentials=True) would let every site "
                "read what signed-in users see; list the origins that may send credentials, like "
                "allow_origins=['https://app.example.com'], or drop allow_credentials"
            )
        self.app = app
        self.allow_credentials = allow_credentials
        self._allow_all_origins = "*" in origins
        self._exact_raw: frozenset[str] = frozenset()
        parsed: set[Origin] = set()
        for entry in origins:
            if entry == "*":
                continue
            origin = parse_origin(entry)
            if origin is None:
                raise ConfigurationError(
                    f"allow_origins entry {entry!r} is not an origin; write it like "
                    "'https://example.com' or '*'"
                )
            parsed.add(origin)
        self._exact_parsed = frozenset(parsed)
        self._exact_raw = frozenset(entry.lower() for entry in origins if entry != "*")
        try:
            self._origin_regex = re.compile(allow_origin_regex) if allow_origin_regex else None
        except re.error as exc:
            raise ConfigurationError(
                f"allow_origin_regex={allow_origin_regex!r} is not a regular expression: {exc}"
            ) from exc
        self._allow_all_methods = "*" in methods
        self.allow_methods = frozenset(m.upper() for m in methods if m != "*")
        self._allow_all_headers = "*" in headers
        self._allowed_headers = frozenset(h.lower() for h in headers if h != "*")
        # "*" is sent as-is only when nothing depends on the request's origin
        self._varies = not self._allow_all_origins or allow_credentials

        simple: list[tuple[bytes, bytes]] = []
        if allow_credentials:
            simple.append((b"access-control-allow-credentials", b"true"))
        if exposed:
            simple.append((b"access-control-expose-headers", ", ".join(exposed).encode("latin-1")))
        self._simple_static = tuple(simple)
        preflight: list[tuple[bytes, bytes]] = [
            (b"access-control-max-age", str(int(max_age)).encode("latin-1"))
        ]
        if allow_credentials:
            preflight.append((b"access-control-allow-credentials", b"true"))
        if not self._allow_all_methods:
            listed = sorted(self.allow_methods)
            preflight.append((b"access-control-allow-methods", ", ".join(listed).encode("latin-1")))
        if not self._allow_all_headers and self._allowed_headers:
            listed = sorted(self._allowed_headers)
            preflight.append((b"access-control-allow-headers", ", ".join(listed).encode("latin-1")))
        self._preflight_static = tuple(preflight)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin: bytes | None = None
        request_method: bytes | None = None
        request_headers: bytes | None = None
        for key, value in scope.get("headers", ()):
            if key == b"origin":
                origin = value
            elif key == b"access-control-request-method":
                request_method = value
            elif key == b"access-control-request-headers":
                request_headers = value if request_headers is None else request_headers + b"," + value

        if origin is None:
            if self._varies:
                await self.app(scope, receive, self._wrap(send, None))
            else:
                await self.app(scope, receive, send)
            return
        text = origin.decode("latin-1")
        if scope["method"] == "OPTIONS" and request_method is not None:
            await self._preflight(send, text, request_method, request_headers)
            return
        await self.app(scope, receive, self._wrap(send, text if self._is_allowed(text) else None))

    def _is_allowed(self, origin: str) -> bool:
        if self._allow_all_origins or origin in self._exact_raw:
            return True
        if self._exact_parsed:
            parsed = parse_origin(origin)
            if parsed is not None and parsed in self._exact_parsed:
                return True
        return self._origin_regex is not None and self._origin_regex.fullmatch(origin) is not None

    def _allow_origin_value(self, origin: str) -> bytes:
        if self._allow_all_origins and not self._varies:
            return b"*"
        return origin.encode("latin-1")

    async def _preflight(self, send: Send, origin: str, method: bytes, requested: bytes | None) -> None:
        if not self._is_allowed(origin):
            await self._refuse(send, f"CORS preflight refused: origin {origin!r} is not allowed")
            return
        method_text = method.decode("latin-1").strip().upper()
        if not self._allow_all_methods and method_text not in self.allow_methods:
            await self._refuse(send, f"CORS preflight refused: method {method_text!r} is not allowed")
            return
        names = [name.strip().lower() for name in (requested or b"").decode("latin-1").split(",")]
        names = [name for name in names if name]
        if not self._allow_all_headers:
            refused = sorted(
                {n for n in names if n not in self._allowed_headers and n not in _SAFELISTED_HEADERS}
            )
            if refused:
                await self._refuse(send, f"CORS preflight refused: headers not allowed: {', '.join(refused)}")
                return
        headers = [
            (b"access-control-allow-origin", self._allow_origin_value(origin)),
            *self._preflight_static,
        ]
        if self._allow_all_methods:
            headers.append((b"access-control-allow-methods", method_text.encode("latin-1")))
        if self._allow_all_headers and names:
            headers.append((b"access-control-allow-headers", ", ".join(names).encode("latin-1")))
        if self._varies:
            headers.append((b"vary", b"Origin"))
        headers.append((b"content-length", b"0"))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    async def _refuse(self, send: Send, detail: str) -> None:
        logger.info("%s", detail)
        headers = [(b"vary", b"Origin")] if self._varies else []
        await send_json_error(send, 400, detail, headers)

    def _wrap(self, send: Send, allowed_origin: str | None) -> Send:
        extra: list[tuple[bytes, bytes]] = []
        if allowed_origin is not None:
            extra.append((b"access-control-allow-origin", self._allow_origin_value(allowed_origin)))
            extra.extend(self._simple_static)
        replaced = {name for name, _ in extra}
        varies = self._varies

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                headers = list(message.get("headers", ()))
                if extra:
                    # ours win: a second Access-Control-Allow-Origin makes browsers refuse
                    headers = [h for h in headers if h[0].lower() not in replaced]
                    headers.extend(extra)
                if varies:
                    _add_vary_origin(headers)
                message["headers"] = headers
            await send(message)

        return send_with_cors


def _add_vary_origin(headers: list[tuple[bytes, bytes]]) -> None:
    for index, (key, value) in enumerate(headers):
        if key.lower() == b"vary":
            tokens = {token.strip().lower() for token in value.split(b",")}
            if b"origin" not in tokens and b"*" not in tokens:
                headers[index] = (key, value + b", Origin")
            return
    headers.append((b"vary", b"Origin"))

"""Security headers every HTTP response should carry."""

from __future__ import annotations

from wirehall.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["DEFAULT_CONTENT_SECURITY_POLICY", "SecurityHeadersMiddleware"]

DEFAULT_CONTENT_SECURITY_POLICY = (
    "default-src 'self'; "
    "img-src 'self' data:; "
    "style-src 'self' 'unsafe-inline'; "
    "object-src 'none'; "
    "base-uri 'self'; "
    "form-action 'self'; "
    "frame-ancestors 'none'"
)
"""Same-origin resources only (inline styles allowed, inline scripts not); no plugins or framing."""


class SecurityHeadersMiddleware:
    """Add nosniff, frame, referrer, CSP (HTML only) and HSTS (https only) headers.

    Args:
        content_security_policy: sent on `text/html` responses; None leaves it out.
        frame_options: `X-Frame-Options` ("DENY", "SAMEORIGIN"); None leaves it out.
        referrer_policy: `Referrer-Policy`; None leaves it out.
        hsts_max_age: seconds for `Strict-Transport-Security` on https responses; None or 0
            leaves it out. `hsts_include_subdomains` and `hsts_preload` add those flags.

    A header the response already has is never replaced, so an endpoint can set its
    own. WebSocket handshakes and other scope types pass through untouched.
    """

    __slots__ = ("_always", "_csp", "_hsts", "app")

    def __init__(
        self,
        app: ASGIApp,
        *,
        content_security_policy: str | None = DEFAULT_CONTENT_SECURITY_POLICY,
        frame_options: str | None = "DENY",
        referrer_policy: str | None = "strict-origin-when-cross-origin",
        hsts_max_age: int | None = 31_536_000,
        hsts_include_subdomains: bool = False,
        hsts_preload: bool = False,
    ) -> None:
        self.app = app
        always = [(b"x-content-type-options", b"nosniff")]
        if frame_options:
            always.append((b"x-frame-options", frame_options.encode("latin-1")))
        if referrer_policy:
            always.append((b"referrer-policy", referrer_policy.encode("latin-1")))
        self._always = tuple(always)
        self._csp = (
            (b"content-security-policy", content_security_policy.encode("latin-1"))
            if content_security_policy
            else None
        )
        hsts: tuple[bytes, bytes] | None = None
        if hsts_max_age:
            value = f"max-age={hsts_max_age}"
            if hsts_include_subdomains:
                value += "; includeSubDomains"
            if hsts_preload:
                value += "; preload"
            hsts = (b"strict-transport-security", value.encode("latin-1"))
        self._hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, self.wrap_send(send, https=scope.get("scheme") == "https"))

    def wrap_send(self, send: Send, *, https: bool) -> Send:
        """`send`, adding the missing security headers to the response it starts."""

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                headers = list(message.get("headers", ()))
                self.add_headers(headers, https=https)
                message["headers"] = headers
            await send(message)

        return send_with_headers

    def add_headers(self, headers: list[tuple[bytes, bytes]], *, https: bool) -> None:
        """Append the missing security headers to a response's raw `headers`, in place.

        For a framework that builds the response itself and so needs no `send` wrapper.
        """
        present: set[bytes] = set()
        is_html = False
        for key, value in headers:
            name = key.lower()
            present.add(name)
            if name == b"content-type" and value[:9].lower() == b"text/html":
                is_html = True
        for header in self._always:
            if header[0] not in present:
                headers.append(header)
        if is_html and self._csp is not None and b"content-security-policy" not in present:
            headers.append(self._csp)
        if https and self._hsts is not None and b"strict-transport-security" not in present:
            headers.append(self._hsts)

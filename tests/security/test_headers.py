from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from wirehall.security.headers import DEFAULT_CONTENT_SECURITY_POLICY, SecurityHeadersMiddleware
from wirehall.types import Receive, Scope, Send

from ._asgi import client


def responder(content_type: bytes | None, extra: list[tuple[bytes, bytes]] | None = None) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = list(extra or [])
        if content_type is not None:
            headers.append((b"content-type", content_type))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"hi"})

    return app


async def test_json_response_gets_headers_but_no_csp() -> None:
    async with client(SecurityHeadersMiddleware(responder(b"application/json"))) as http:
        response = await http.get("/")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "strict-origin-when-cross-origin"
    assert "content-security-policy" not in response.headers
    assert "strict-transport-security" not in response.headers


async def test_html_response_gets_csp() -> None:
    app = SecurityHeadersMiddleware(responder(b"Text/HTML; charset=utf-8"))
    async with client(app) as http:
        response = await http.get("/")
    assert response.headers["content-security-policy"] == DEFAULT_CONTENT_SECURITY_POLICY
    assert "default-src 'self'" in response.headers["content-security-policy"]


async def test_hsts_only_on_https() -> None:
    app = SecurityHeadersMiddleware(responder(b"text/plain"))
    async with client(app, "https://testserver") as http:
        response = await http.get("/")
    assert response.headers["strict-transport-security"] == "max-age=31536000"
    flags = SecurityHeadersMiddleware(
        responder(None), hsts_max_age=60, hsts_include_subdomains=True, hsts_preload=True
    )
    async with client(flags, "https://testserver") as http:
        value = (await http.get("/")).headers["strict-transport-security"]
    assert value == "max-age=60; includeSubDomains; preload"


async def test_headers_already_set_are_kept() -> None:
    app = SecurityHeadersMiddleware(
        responder(
            b"text/html",
            [
                (b"X-Frame-Options", b"SAMEORIGIN"),
                (b"content-security-policy", b"default-src *"),
                (b"referrer-policy", b"no-referrer"),
            ],
        )
    )
    async with client(app) as http:
        response = await http.get("/")
    assert response.headers.get_list("x-frame-options") == ["SAMEORIGIN"]
    assert response.headers.get_list("content-security-policy") == ["default-src *"]
    assert response.headers.get_list("referrer-policy") == ["no-referrer"]
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_options_can_turn_headers_off() -> None:
    app = SecurityHeadersMiddleware(
        responder(b"text/html"),
        content_security_policy=None,
        frame_options=None,
        referrer_policy=None,
        hsts_max_age=None,
    )
    async with client(app, "https://testserver") as http:
        response = await http.get("/")
    for name in (
        "content-security-policy",
        "x-frame-options",
        "referrer-policy",
        "strict-transport-security",
    ):
        assert name not in response.headers
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_custom_values() -> None:
    app = SecurityHeadersMiddleware(
        responder(b"text/html"), content_security_policy="default-src 'none'", frame_options="SAMEORIGIN"
    )
    async with client(app) as http:
        response = await http.get("/")
    assert response.headers["content-security-policy"] == "default-src 'none'"
    assert response.headers["x-frame-options"] == "SAMEORIGIN"


async def test_websocket_and_lifespan_pass_through() -> None:
    seen: list[str] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])
        await send({"type": "websocket.accept"} if scope["type"] == "websocket" else {"type": "x"})

    sent: list[Any] = []

    async def record(message: Any) -> None:
        sent.append(message)

    async def nothing() -> Any:
        raise AssertionError

    app = SecurityHeadersMiddleware(inner)
    await app({"type": "lifespan"}, nothing, record)
    await app({"type": "websocket"}, nothing, record)
    assert seen == ["lifespan", "websocket"]
    assert sent == [{"type": "x"}, {"type": "websocket.accept"}]


@settings(max_examples=100, deadline=None)
@given(
    headers=st.lists(
        st.tuples(
            st.sampled_from([b"content-type", b"x-frame-options", b"Content-Security-Policy", b"x-other"]),
            st.binary(max_size=30),
        ),
        max_size=6,
    )
)
async def test_generated_response_headers_never_crash(headers: list[tuple[bytes, bytes]]) -> None:
    captured: list[Any] = []

    async def record(message: Any) -> None:
        captured.append(message)

    async def nothing() -> Any:
        raise AssertionError

    app = SecurityHeadersMiddleware(responder(None, headers))
    await app({"type": "http", "scheme": "http", "headers": []}, nothing, record)
    out = captured[0]["headers"]
    names = [k.lower() for k, _ in out]
    assert names.count(b"x-content-type-options") == 1
    assert names.count(b"x-frame-options") >= 1
    assert out[: len(headers)] == headers  # the app's own headers are unchanged

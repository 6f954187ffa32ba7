"""The security features through a real `Wirehall` app."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from wirehall.app import Middleware, Wirehall
from wirehall.http.controller import HTTPController
from wirehall.http.request import Request
from wirehall.http.response import Response
from wirehall.security import (
    AuthenticationMiddleware,
    CORSMiddleware,
    CSRFMiddleware,
    SessionMiddleware,
    TrustedHostMiddleware,
    requires_auth,
    session_user,
)
from wirehall.testing.client import TestClient
from wirehall.websocket.controller import WebSocketController

from ._asgi import handshake, websocket_scope


def build_app(**options: Any) -> Wirehall:
    app = Wirehall(**options)

    @app.get("/json")
    async def data() -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/page")
    async def page(request: Request) -> Response:
        return Response(b"<h1>hi</h1>", headers={"content-type": "text/html; charset=utf-8"})

    @app.post("/login")
    async def login(request: Request) -> dict[str, Any]:
        form = await request.form()
        request.session["user"] = {"name": form["name"], "roles": form.getlist("role")}
        return {"ok": True}

    @app.post("/logout")
    async def logout(request: Request) -> dict[str, Any]:
        request.session.clear()
        return {"ok": True}

    @app.get("/me")
    @requires_auth
    async def me(request: Request) -> dict[str, Any]:
        return {"user": request.user}

    @app.route("/admin")
    @requires_auth(["admin"])
    class Admin(HTTPController):
        async def get(self) -> dict[str, Any]:
            return {"admin": self.user["name"]}

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, Any]:
        size = len(await request.body())
        form = await request.form()
        return {"text": form.get("text"), "size": size}

    @app.websocket("/ws")
    class Echo(WebSocketController):
        async def on_connect(self) -> None:
            await self.accept()
            await self.send_json({"user": self.user, "session": self.session})

    @app.websocket("/ws/private")
    @requires_auth
    class Private(WebSocketController):
        async def on_connect(self) -> None:
            await self.accept()
            await self.send_json({"user": self.user})

    return app


async def test_default_app_sends_security_headers_and_csp_on_html_only() -> None:
    async with TestClient(build_app()) as client:
        data = await client.get("/json")
        page = await client.get("/page")
    for response in (data, page):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "strict-origin-when-cross-origin"
    assert "content-security-policy" not in data.headers
    assert "default-src 'self'" in page.headers["content-security-policy"]


async def test_security_headers_can_be_turned_off() -> None:
    async with TestClient(build_app(security_headers=False)) as client:
        response = await client.get("/page")
    assert "x-frame-options" not in response.headers
    assert "content-security-policy" not in response.headers


async def test_default_app_refuses_cross_site_websocket() -> None:
    app = build_app()
    async with TestClient(app):
        foreign = await handshake(
            app,
            websocket_scope("/ws", headers=[("host", "testserver"), ("origin", "http://evil.example")]),
        )
        own = await handshake(
            app,
            websocket_scope("/ws", headers=[("host", "testserver"), ("origin", "http://testserver")]),
        )
        scriptless = await handshake(app, websocket_scope("/ws", headers=[("host", "testserver")]))
    assert not foreign.accepted
    assert foreign.close_code == 1008
    assert own.accepted
    assert scriptless.accepted


async def test_allowed_origins_option_reaches_the_check() -> None:
    app = build_app(allowed_origins=["https://app.example.org"])
    async with TestClient(app):
        result = await handshake(
            app,
            websocket_scope("/ws", headers=[("host", "testserver"), ("origin", "https://app.example.org")]),
        )
    assert result.accepted


def session_app() -> Wirehall:
    return build_app(
        middleware=[
            Middleware(SessionMiddleware, secret_key="integration-secret"),
            Middleware(AuthenticationMiddleware, authenticate=session_user()),
        ]
    )


async def test_login_session_and_requires_auth() -> None:
    app = session_app()
    async with TestClient(app) as client:
        assert (await client.get("/me")).status_code == 401
        assert (await client.get("/admin")).status_code == 401
        login = await client.post("/login", data={"name": "ann", "role": ["staff"]})
        assert login.status_code == 200
        assert "HttpOnly" in login.headers["set-cookie"]
        me = await client.get("/me")
        assert me.status_code == 200
        assert me.json() == {"user": {"name": "ann", "roles": ["staff"]}}
        assert (await client.get("/admin")).status_code == 403
        await client.post("/login", data={"name": "ann", "role": ["staff", "admin"]})
        assert (await client.get("/admin")).json() == {"admin": "ann"}
        logout = await client.post("/logout")
        assert "Max-Age=0" in logout.headers["set-cookie"]
        assert (await client.get("/me")).status_code == 401


async def test_forged_session_cookie_is_anonymous_not_an_error() -> None:
    async with TestClient(session_app()) as client:
        response = await client.get("/me", headers={"cookie": "session=eyJ1c2VyIjoiZXZlIn0.x.y"})
    assert response.status_code == 401


async def test_websocket_sees_session_user_and_requires_auth() -> None:
    app = session_app()
    async with TestClient(app) as client:
        anonymous = await handshake(app, websocket_scope("/ws/private"))
        assert not anonymous.accepted
        await client.post("/login", data={"name": "bo"})
        cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
        signed_in = await handshake(app, websocket_scope("/ws/private", headers=[("cookie", cookie)]))
        echo = await handshake(app, websocket_scope("/ws", headers=[("cookie", cookie)]))
    assert signed_in.accepted
    assert signed_in.texts()[0] == {"user": {"name": "bo", "roles": []}}
    assert echo.texts()[0]["session"] == {"user": {"name": "bo", "roles": []}}


async def test_csrf_through_the_app_keeps_the_form_readable() -> None:
    app = build_app(
        middleware=[
            Middleware(SessionMiddleware, secret_key="k"),
            Middleware(CSRFMiddleware),
        ]
    )
    async with TestClient(app) as client:
        await client.get("/json")  # gets the csrftoken cookie
        token = client.cookies["csrftoken"]
        refused = await client.post("/echo", data={"text": "hi"})
        assert refused.status_code == 403
        assert refused.json() == {"error": "CSRF token missing or invalid"}
        by_form = await client.post("/echo", data={"text": "hi", "csrf_token": token})
        assert by_form.status_code == 200
        assert by_form.json()["text"] == "hi"
        by_header = await client.post("/echo", data={"text": "yo"}, headers={"x-csrf-token": token})
        assert by_header.json()["text"] == "yo"
        multipart = await client.post(
            "/echo",
            data={"csrf_token": token, "text": "file"},
            files={"f": ("a.txt", b"x" * 10000, "text/plain")},
        )
        assert multipart.status_code == 200
        assert multipart.json()["size"] > 10000


async def test_cors_preflight_through_the_app() -> None:
    app = build_app(
        middleware=[
            Middleware(
                CORSMiddleware,
                allow_origins=["https://app.example.org"],
                allow_methods=["GET", "POST"],
                allow_credentials=True,
            )
        ]
    )
    async with TestClient(app) as client:
        preflight = await client.options(
            "/echo",
            headers={
                "origin": "https://app.example.org",
                "access-control-request-method": "POST",
            },
        )
        denied = await client.options(
            "/echo",
            headers={"origin": "https://evil.example", "access-control-request-method": "POST"},
        )
        simple = await client.get("/json", headers={"origin": "https://app.example.org"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-credentials"] == "true"
    assert denied.status_code == 400
    assert simple.headers["access-control-allow-origin"] == "https://app.example.org"
    assert simple.headers["x-content-type-options"] == "nosniff"


async def test_trusted_hosts_through_the_app() -> None:
    app = build_app(middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=["testserver"])])
    async with TestClient(app) as client:
        assert (await client.get("/json")).status_code == 200
        bad = await client.get("/json", headers={"host": "evil.example"})
    assert bad.status_code == 400
    assert bad.json() == {"error": "invalid Host header"}


async def test_body_over_the_limit_is_413() -> None:
    async with TestClient(build_app(max_body_size=1000)) as client:
        response = await client.post("/echo", data={"text": "x" * 5000})
    assert response.status_code == 413


@pytest.mark.parametrize("token", ["", "x", secrets.token_urlsafe(32)])
async def test_wrong_csrf_tokens_are_403_never_500(token: str) -> None:
    app = build_app(middleware=[Middleware(CSRFMiddleware)])
    async with TestClient(app) as client:
        await client.get("/json")
        response = await client.post("/echo", data={"csrf_token": token})
    assert response.status_code == 403

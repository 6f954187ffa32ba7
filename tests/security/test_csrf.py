from __future__ import annotations

import secrets
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wirehall.errors import ConfigurationError
from wirehall.security.csrf import CSRFMiddleware
from wirehall.types import Receive, Scope, Send

from ._asgi import client, echo_scope_app, passed_through

TOKEN = secrets.token_urlsafe(32)
OTHER = secrets.token_urlsafe(32)


def csrf_client(app: CSRFMiddleware | None = None, base_url: str = "http://testserver") -> httpx.AsyncClient:
    return client(app or CSRFMiddleware(echo_scope_app), base_url)


def cookie_header(response: httpx.Response) -> str:
    return ";".join(response.headers.get_list("set-cookie"))


async def test_get_sets_a_readable_token_cookie_and_exposes_it() -> None:
    async with csrf_client() as http:
        response = await http.get("/")
    assert response.status_code == 200
    header = cookie_header(response)
    assert header.startswith("csrftoken=")
    assert "HttpOnly" not in header
    assert "SameSite=Lax" in header
    assert "Path=/" in header
    assert "Secure" not in header
    token = header.split(";")[0].removeprefix("csrftoken=")
    assert response.json()["csrf_token"] == token


async def test_existing_token_is_kept_and_not_re_set() -> None:
    async with csrf_client() as http:
        response = await http.get("/", headers={"cookie": f"csrftoken={TOKEN}"})
    assert response.json()["csrf_token"] == TOKEN
    assert cookie_header(response) == ""


async def test_malformed_token_cookie_is_replaced() -> None:
    async with csrf_client() as http:
        response = await http.get("/", headers={"cookie": "csrftoken=short"})
    assert response.json()["csrf_token"] != "short"
    assert cookie_header(response).startswith("csrftoken=")


async def test_secure_cookie_on_https() -> None:
    async with csrf_client(base_url="https://testserver") as http:
        assert "Secure" in cookie_header(await http.get("/"))


async def test_unsafe_request_with_cookies_and_no_token_is_403() -> None:
    async with csrf_client() as http:
        response = await http.post("/", headers={"cookie": f"csrftoken={TOKEN}; session=x"}, content=b"{}")
    assert response.status_code == 403
    assert response.json() == {"error": "CSRF token missing or invalid"}


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
async def test_header_token_passes(method: str) -> None:
    async with csrf_client() as http:
        response = await http.request(
            method,
            "/",
            headers={"cookie": f"csrftoken={TOKEN}", "x-csrf-token": TOKEN},
            content=b"payload",
        )
    assert response.status_code == 200
    assert response.json()["body"] == "payload"


async def test_wrong_header_token_is_403() -> None:
    async with csrf_client() as http:
        response = await http.post("/", headers={"cookie": f"csrftoken={TOKEN}", "x-csrf-token": OTHER})
    assert response.status_code == 403


async def test_cookies_without_token_cookie_is_403_and_sets_one() -> None:
    async with csrf_client() as http:
        response = await http.post("/", headers={"cookie": "session=abc", "x-csrf-token": TOKEN})
    assert response.status_code == 403
    assert cookie_header(response).startswith("csrftoken=")


async def test_requests_without_cookies_are_not_checked() -> None:
    async with csrf_client() as http:
        response = await http.post("/", headers={"authorization": "Bearer abc"}, content=b"data")
    assert response.status_code == 200
    assert response.json()["body"] == "data"


async def test_safe_methods_are_not_checked() -> None:
    async with csrf_client() as http:
        for method in ("GET", "HEAD", "OPTIONS", "TRACE"):
            response = await http.request(method, "/", headers={"cookie": "session=abc"})
            assert response.status_code == 200


async def test_urlencoded_form_token_passes_and_the_app_reads_the_whole_body() -> None:
    form = {"text": "hello world", "csrf_token": TOKEN, "after": "x" * 5000}
    async with csrf_client() as http:
        response = await http.post("/", headers={"cookie": f"csrftoken={TOKEN}"}, data=form)
    assert response.status_code == 200
    body = response.json()["body"]
    assert body == httpx.QueryParams(form).__str__()
    assert body.endswith("x" * 5000)


async def test_urlencoded_form_with_wrong_or_missing_token_is_403() -> None:
    async with csrf_client() as http:
        wrong = await http.post("/", headers={"cookie": f"csrftoken={TOKEN}"}, data={"csrf_token": OTHER})
        missing = await http.post("/", headers={"cookie": f"csrftoken={TOKEN}"}, data={"text": "hi"})
    assert wrong.status_code == 403
    assert missing.status_code == 403


async def test_multipart_form_token_passes_and_the_app_reads_the_whole_body() -> None:
    upload = b"\x00\x01binary" * 20000
    async with csrf_client() as http:
        request = http.build_request(
            "POST",
            "/",
            headers={"cookie": f"csrftoken={TOKEN}"},
            data={"csrf_token": TOKEN, "text": "hi"},
            files={"upload": ("a.bin", upload, "application/octet-stream")},
        )
        expected = request.read()
        response = await http.send(request)
    assert response.status_code == 200
    assert response.json()["body"].encode("latin-1") == expected


async def test_multipart_with_file_named_like_the_field_is_not_a_token() -> None:
    async with csrf_client() as http:
        response = await http.post(
            "/",
            headers={"cookie": f"csrftoken={TOKEN}"},
            files={"csrf_token": ("t.txt", TOKEN.encode(), "text/plain")},
        )
    assert response.status_code == 403


async def test_multipart_wrong_token_and_malformed_body_are_403() -> None:
    async with csrf_client() as http:
        wrong = await http.post(
            "/",
            headers={"cookie": f"csrftoken={TOKEN}"},
            data={"csrf_token": OTHER},
            files={"f": ("a", b"x")},
        )
        malformed = await http.post(
            "/",
            headers={
                "cookie": f"csrftoken={TOKEN}",
                "content-type": "multipart/form-data; boundary=abc",
            },
            content=b"this is not multipart at all",
        )
        no_boundary = await http.post(
            "/",
            headers={"cookie": f"csrftoken={TOKEN}", "content-type": "multipart/form-data"},
            content=b"--x\r\n",
        )
    assert wrong.status_code == 403
    assert malformed.status_code == 403
    assert no_boundary.status_code == 403


async def test_streamed_body_is_replayed_in_its_chunks() -> None:
    chunks = [b"csrf_", b"token=" + TOKEN.encode()[:10], TOKEN.encode()[10:], b"&x=1"]
    received: list[bytes] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            received.append(message["body"])
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def body() -> Any:
        for chunk in chunks:
            yield chunk

    async with csrf_client(CSRFMiddleware(app)) as http:
        response = await http.post(
            "/",
            headers={
                "cookie": f"csrftoken={TOKEN}",
                "content-type": "application/x-www-form-urlencoded",
            },
            content=body(),
        )
    assert response.status_code == 204
    assert b"".join(received) == b"".join(chunks)


async def test_form_over_the_buffer_limit_is_413() -> None:
    app = CSRFMiddleware(echo_scope_app, max_body_size=1000)
    async with csrf_client(app) as http:
        big = await http.post(
            "/",
            headers={"cookie": f"csrftoken={TOKEN}"},
            data={"text": "x" * 5000, "csrf_token": TOKEN},
        )
        # the header still works for big bodies
        header = await http.post(
            "/",
            headers={"cookie": f"csrftoken={TOKEN}", "x-csrf-token": TOKEN},
            data={"text": "x" * 5000},
        )
    assert big.status_code == 413
    assert "x-csrf-token" in big.json()["error"]
    assert header.status_code == 200


async def test_multipart_token_first_is_found_without_buffering_the_rest() -> None:
    app = CSRFMiddleware(echo_scope_app, max_body_size=1000)

    async def body() -> Any:
        yield (b'--b\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n' + TOKEN.encode() + b"\r\n")
        for _ in range(10):
            yield b'--b\r\nContent-Disposition: form-data; name="f"\r\n\r\n' + b"y" * 500 + b"\r\n"
        yield b"--b--\r\n"

    async with csrf_client(app) as http:
        response = await http.post(
            "/",
            headers={
                "cookie": f"csrftoken={TOKEN}",
                "content-type": "multipart/form-data; boundary=b",
            },
            content=body(),
        )
    assert response.status_code == 200
    assert response.json()["body"].count("y" * 500) == 10


async def test_exempt_paths() -> None:
    app = CSRFMiddleware(echo_scope_app, exempt_paths=["/hooks/github", "/api/"])
    headers = {"cookie": f"csrftoken={TOKEN}"}
    async with csrf_client(app) as http:
        assert (await http.post("/hooks/github", headers=headers)).status_code == 200
        assert (await http.post("/hooks/github/x", headers=headers)).status_code == 403
        assert (await http.post("/api/rooms", headers=headers)).status_code == 200
        assert (await http.post("/apiary", headers=headers)).status_code == 403


async def test_custom_names() -> None:
    app = CSRFMiddleware(echo_scope_app, cookie_name="xsrf", header_name="X-XSRF", form_field="_token")
    async with csrf_client(app) as http:
        assert (await http.post("/", headers={"cookie": f"xsrf={TOKEN}", "x-xsrf": TOKEN})).status_code == 200
        assert (
            await http.post("/", headers={"cookie": f"xsrf={TOKEN}"}, data={"_token": TOKEN})
        ).status_code == 200
        assert (
            await http.post("/", headers={"cookie": f"xsrf={TOKEN}", "x-csrf-token": TOKEN})
        ).status_code == 403


async def test_host_prefixed_cookie_is_secure() -> None:
    app = CSRFMiddleware(echo_scope_app, cookie_name="__Host-csrf")
    async with csrf_client(app) as http:
        assert "Secure" in cookie_header(await http.get("/"))
    with pytest.raises(ConfigurationError):
        CSRFMiddleware(echo_scope_app, cookie_name="__Host-csrf", cookie_domain="example.com")


async def test_client_disconnect_while_reading_form_does_not_call_the_app() -> None:
    called = False

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal called
        called = True

    messages = [
        {"type": "http.request", "body": b"csrf_", "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> Any:
        return messages.pop(0)

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "scheme": "http",
        "headers": [
            (b"cookie", f"csrftoken={TOKEN}".encode()),
            (b"content-type", b"application/x-www-form-urlencoded"),
        ],
    }
    await CSRFMiddleware(app)(scope, receive, send)
    assert not called
    assert sent == []


async def test_websocket_and_lifespan_pass_through() -> None:
    seen = await passed_through(
        CSRFMiddleware, {"type": "lifespan"}, {"type": "websocket", "headers": [(b"cookie", b"a=b")]}
    )
    assert seen == ["lifespan", "websocket"]


header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=80)


@settings(max_examples=150, deadline=None)
@given(cookie=header_text, token=header_text, body=st.binary(max_size=300), multipart=st.booleans())
async def test_generated_cookies_tokens_and_bodies_never_crash(
    cookie: str, token: str, body: bytes, multipart: bool
) -> None:
    content_type = b"multipart/form-data; boundary=zz" if multipart else b"application/x-www-form-urlencoded"
    async with csrf_client() as http:
        response = await http.post(
            "/",
            headers={
                b"cookie": cookie.encode("latin-1"),
                b"x-csrf-token": token.strip().encode("latin-1"),
                b"content-type": content_type,
            },
            content=body,
        )
        form = await http.post(
            "/",
            headers={b"cookie": cookie.encode("latin-1"), b"content-type": content_type},
            content=body,
        )
    assert response.status_code in (200, 403)
    assert form.status_code in (200, 403)
    if response.status_code == 403:
        assert response.json() == {"error": "CSRF token missing or invalid"}


@settings(max_examples=50, deadline=None)
@given(
    token=st.text(
        alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", min_size=43, max_size=43
    )
)
async def test_any_well_formed_cookie_token_is_accepted_when_echoed(token: str) -> None:
    async with csrf_client() as http:
        ok = await http.post("/", headers={"cookie": f"csrftoken={token}", "x-csrf-token": token})
        bad = await http.post(
            "/", headers={"cookie": f"csrftoken={token}", "x-csrf-token": token[::-1] + "x"}
        )
    assert ok.status_code == 200
    assert bad.status_code == 403

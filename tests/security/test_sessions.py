from __future__ import annotations

import hashlib
import time
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl

import httpx
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from itsdangerous import TimestampSigner
from itsdangerous.encoding import base64_encode

from wirehall.errors import ConfigurationError
from wirehall.security.sessions import SessionMiddleware
from wirehall.types import Receive, Scope, Send

from ._asgi import client, echo_scope_app, handshake, passed_through, websocket_scope


async def session_app(scope: Scope, receive: Receive, send: Send) -> None:
    """/set?k=v sets keys, /clear empties, /append?item=x appends to a nested list."""
    assert scope["type"] == "http"
    session = scope["session"]
    params = dict(parse_qsl(scope["query_string"].decode()))
    if scope["path"] == "/set":
        session.update(params)
    elif scope["path"] == "/clear":
        session.clear()
    elif scope["path"] == "/append":
        session.setdefault("items", []).append(params["item"])
    elif scope["path"] == "/replace":
        scope["session"] = {"replaced": True}
    body = msgspec.json.encode(scope["session"])
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def make_cookie(data: Any, key: str = "secret", timestamp: int | None = None) -> str:
    signer = TimestampSigner(key, salt=b"wirehall.session", digest_method=hashlib.sha256)
    if timestamp is not None:
        signer.get_timestamp = lambda: timestamp  # type: ignore[method-assign]
    return signer.sign(base64_encode(msgspec.json.encode(data))).decode()


def set_cookie(response: httpx.Response) -> str | None:
    value: str | None = response.headers.get("set-cookie")
    return value


async def test_new_session_sets_signed_httponly_cookie() -> None:
    app = SessionMiddleware(session_app, "secret")
    async with client(app) as http:
        response = await http.get("/set?user=ann")
        header = set_cookie(response)
        assert header is not None
        assert header.startswith("session=")
        assert "HttpOnly" in header
        assert "SameSite=Lax" in header
        assert "Path=/" in header
        assert f"Max-Age={14 * 24 * 3600}" in header
        assert "Secure" not in header
        # the client sends it back and the session is read
        again = await http.get("/read")
        assert again.json() == {"user": "ann"}
        assert set_cookie(again) is None  # unchanged: no cookie sent


async def test_unchanged_and_empty_sessions_send_no_cookie() -> None:
    app = SessionMiddleware(session_app, "secret")
    async with client(app) as http:
        response = await http.get("/read")
        assert set_cookie(response) is None
        await http.get("/set?a=1")
        assert set_cookie(await http.get("/set?a=1")) is None  # same value: not changed


async def test_nested_change_is_saved() -> None:
    app = SessionMiddleware(session_app, "secret")
    async with client(app) as http:
        await http.get("/append?item=x")
        response = await http.get("/append?item=y")
        assert set_cookie(response) is not None
        assert (await http.get("/read")).json() == {"items": ["x", "y"]}


async def test_cleared_session_deletes_cookie() -> None:
    app = SessionMiddleware(session_app, "secret")
    async with client(app) as http:
        await http.get("/set?a=1")
        response = await http.get("/clear")
        header = set_cookie(response)
        assert header is not None
        assert header.startswith("session=;")
        assert "Max-Age=0" in header
        assert "session" not in http.cookies
        assert (await http.get("/read")).json() == {}


async def test_replacing_the_session_dict_is_saved() -> None:
    app = SessionMiddleware(session_app, "secret")
    async with client(app) as http:
        await http.get("/replace")
        assert (await http.get("/read")).json() == {"replaced": True}


async def test_secure_on_https_and_when_forced() -> None:
    async with client(SessionMiddleware(session_app, "secret"), "https://testserver") as http:
        assert "Secure" in (set_cookie(await http.get("/set?a=1")) or "")
        assert "Secure" in (set_cookie(await http.get("/clear")) or "")
    forced = SessionMiddleware(session_app, "secret", https_only=True)
    async with client(forced) as http:
        assert "Secure" in (set_cookie(await http.get("/set?a=1")) or "")
    off = SessionMiddleware(session_app, "secret", https_only=False)
    async with client(off, "https://testserver") as http:
        assert "Secure" not in (set_cookie(await http.get("/set?a=1")) or "")


async def test_cookie_options() -> None:
    app = SessionMiddleware(
        session_app,
        "secret",
        cookie_name="sid",
        max_age=timedelta(hours=1),
        same_site="strict",
        path="/app",
        domain="example.com",
    )
    async with client(app) as http:
        header = set_cookie(await http.get("/set?a=1")) or ""
    assert header.startswith("sid=")
    assert "Max-Age=3600" in header
    assert "SameSite=Strict" in header
    assert "Path=/app" in header
    assert "Domain=example.com" in header


async def test_browser_session_cookie_without_max_age() -> None:
    app = SessionMiddleware(session_app, "secret", max_age=None)
    async with client(app) as http:
        header = set_cookie(await http.get("/set?a=1")) or ""
        assert "Max-Age" not in header
        assert (await http.get("/read")).json() == {"a": "1"}


async def test_same_site_none_forces_secure() -> None:
    app = SessionMiddleware(session_app, "secret", same_site="none")
    async with client(app) as http:
        header = set_cookie(await http.get("/set?a=1")) or ""
    assert "SameSite=None" in header
    assert "Secure" in header


@pytest.mark.parametrize(
    "kwargs",
    [
        {"secret_key": ""},
        {"secret_key": []},
        {"secret_key": ["ok", ""]},
        {"secret_key": "s", "same_site": "sometimes"},
        {"secret_key": "s", "same_site": "none", "https_only": False},
        {"secret_key": "s", "max_age": 0},
        {"secret_key": "s", "cookie_name": "bad name;"},
    ],
)
def test_bad_configuration_is_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        SessionMiddleware(session_app, **kwargs)


async def _read_with_cookie(app: SessionMiddleware, cookie: str) -> httpx.Response:
    async with client(app) as http:
        return await http.get("/read", headers={"cookie": f"session={cookie}"})


async def test_valid_cookie_is_read() -> None:
    app = SessionMiddleware(session_app, "secret")
    response = await _read_with_cookie(app, make_cookie({"user": "ann"}))
    assert response.json() == {"user": "ann"}
    assert set_cookie(response) is None


@pytest.mark.parametrize(
    "cookie",
    [
        pytest.param(make_cookie({"user": "ann"}, key="other"), id="wrong-key"),
        pytest.param(
            make_cookie({"user": "ann"}).replace(
                base64_encode(b'{"user":"ann"}').decode(),
                base64_encode(b'{"user":"eve"}').decode(),
            ),
            id="tampered-payload",
        ),
        pytest.param(make_cookie({"user": "ann"})[:-2] + "xx", id="tampered-signature"),
        pytest.param(base64_encode(b'{"user":"ann"}').decode(), id="unsigned"),
        pytest.param(
            make_cookie({"user": "ann"}, timestamp=int(time.time()) - 15 * 24 * 3600),
            id="expired",
        ),
        pytest.param(make_cookie({"user": "ann"}, timestamp=int(time.time()) + 3600), id="from-the-future"),
        pytest.param(make_cookie(["not", "a", "dict"]), id="not-an-object"),
        pytest.param(make_cookie("text"), id="string-payload"),
        pytest.param(
            TimestampSigner("secret", salt=b"wirehall.session", digest_method=hashlib.sha256)
            .sign(b"!!notbase64!!")
            .decode(),
            id="bad-base64",
        ),
        pytest.param(
            TimestampSigner("secret", salt=b"wirehall.session", digest_method=hashlib.sha256)
            .sign(base64_encode(b"{not json"))
            .decode(),
            id="bad-json",
        ),
        pytest.param("", id="empty"),
        pytest.param("...", id="dots"),
        pytest.param("é", id="non-ascii"),
    ],
)
async def test_bad_cookies_give_an_empty_session(cookie: str) -> None:
    app = SessionMiddleware(session_app, "secret")
    async with client(app) as http:
        response = await http.get("/read", headers={b"cookie": f"session={cookie}".encode("latin-1")})
    assert response.status_code == 200
    assert response.json() == {}
    # the bad cookie is removed from the browser
    assert (set_cookie(response) or "").startswith("session=;")


async def test_rotated_key_still_verifies_and_is_re_signed_with_the_new_key() -> None:
    old_cookie = make_cookie({"user": "ann"}, key="old")
    app = SessionMiddleware(session_app, ["new", "old"])
    async with client(app) as http:
        response = await http.get("/read", headers={"cookie": f"session={old_cookie}"})
        assert response.json() == {"user": "ann"}
        header = set_cookie(response)
        assert header is not None  # re-signed although unchanged
        token = header.split(";")[0].removeprefix("session=")
        assert token != old_cookie
        changed = await http.get("/set?role=x", headers={"cookie": f"session={token}"})
        new_token = (set_cookie(changed) or "").split(";")[0].removeprefix("session=")
    # the new cookies verify with the new key alone
    only_new = SessionMiddleware(session_app, "new")
    assert (await _read_with_cookie(only_new, token)).json() == {"user": "ann"}
    assert (await _read_with_cookie(only_new, new_token)).json() == {"user": "ann", "role": "x"}
    only_old = SessionMiddleware(session_app, "old")
    assert (await _read_with_cookie(only_old, token)).json() == {}


async def test_unserialisable_session_is_a_clear_error() -> None:
    async def bad_app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["session"]["when"] = object()
        await send({"type": "http.response.start", "status": 200, "headers": []})

    app = SessionMiddleware(bad_app, "secret")
    with pytest.raises(TypeError, match="JSON-serialisable"):
        await app({"type": "http", "headers": [], "scheme": "http"}, _no_receive, _discard)


async def _no_receive() -> Any:
    raise AssertionError("not expected")


async def _discard(message: Any) -> None:
    return None


async def test_websocket_reads_the_session_and_sets_no_cookie() -> None:
    app = SessionMiddleware(echo_scope_app, "secret")
    result = await handshake(
        app, websocket_scope(headers=[("cookie", f"a=b; session={make_cookie({'user': 'ann'})}")])
    )
    assert result.accepted
    assert result.texts()[0]["session"] == {"user": "ann"}
    assert not any(m["type"] == "websocket.http.response.start" for m in result.sent)
    anonymous = await handshake(app, websocket_scope(headers=[("cookie", "session=forged")]))
    assert anonymous.texts()[0]["session"] == {}


async def test_other_cookies_are_left_alone() -> None:
    app = SessionMiddleware(session_app, "secret")
    async with client(app) as http:
        response = await http.get("/read", headers={"cookie": "sessionx=1; other=2"})
    assert response.json() == {}
    assert set_cookie(response) is None


async def test_lifespan_passes_through() -> None:
    seen = await passed_through(lambda app: SessionMiddleware(app, "secret"), {"type": "lifespan"})
    assert seen == ["lifespan"]


@settings(max_examples=150, deadline=None)
@given(cookie=st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=200))
async def test_generated_cookie_headers_never_crash(cookie: str) -> None:
    app = SessionMiddleware(session_app, ["secret", "old"])
    async with client(app) as http:
        response = await http.get("/read", headers={b"cookie": cookie.encode("latin-1")})
    assert response.status_code == 200
    assert isinstance(response.json(), dict)


@settings(max_examples=150, deadline=None)
@given(token=st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789-_.=", max_size=80))
async def test_generated_session_tokens_never_crash(token: str) -> None:
    app = SessionMiddleware(session_app, "secret")
    response = await _read_with_cookie(app, token)
    assert response.status_code == 200
    assert response.json() == {}


@settings(max_examples=50, deadline=None)
@given(
    data=st.dictionaries(
        st.text(max_size=10),
        st.recursive(
            st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
            max_leaves=10,
        ),
        min_size=1,
        max_size=5,
    )
)
async def test_any_json_session_round_trips(data: dict[str, Any]) -> None:
    async def store(scope: Scope, receive: Receive, send: Send) -> None:
        scope["session"].update(data)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async with client(SessionMiddleware(store, "secret")) as http:
        header = set_cookie(await http.get("/"))
    assert header is not None
    token = header.split(";")[0].removeprefix("session=")
    response = await _read_with_cookie(SessionMiddleware(session_app, "secret"), token)
    assert response.json() == data

from __future__ import annotations

from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wirehall.errors import ConfigurationError
from wirehall.security.cors import CORSMiddleware
from wirehall.types import Receive, Scope, Send

from ._asgi import client, echo_scope_app, passed_through

SITE = "https://app.example.org"


def cors(**options: Any) -> httpx.AsyncClient:
    return client(CORSMiddleware(echo_scope_app, **options))


def preflight_headers(origin: str = SITE, method: str = "POST", headers: str | None = None) -> dict[str, str]:
    result = {"origin": origin, "access-control-request-method": method}
    if headers is not None:
        result["access-control-request-headers"] = headers
    return result


async def test_preflight_allowed_is_answered_directly() -> None:
    async with cors(allow_origins=[SITE], allow_methods=["GET", "POST"], allow_headers=["X-Token"]) as http:
        response = await http.options("/api", headers=preflight_headers(headers="x-token"))
    assert response.status_code == 200
    assert response.text == ""
    assert response.headers["access-control-allow-origin"] == SITE
    assert response.headers["access-control-allow-methods"] == "GET, POST"
    assert response.headers["access-control-allow-headers"] == "x-token"
    assert response.headers["access-control-max-age"] == "600"
    assert response.headers["vary"] == "Origin"
    assert "access-control-allow-credentials" not in response.headers


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        (preflight_headers(origin="https://evil.example"), "origin"),
        (preflight_headers(method="DELETE"), "method"),
        (preflight_headers(headers="x-token, x-secret"), "x-secret"),
        (preflight_headers(origin="null"), "origin"),
    ],
)
async def test_preflight_refused_is_400_json(headers: dict[str, str], message: str) -> None:
    async with cors(allow_origins=[SITE], allow_methods=["POST"], allow_headers=["x-token"]) as http:
        response = await http.options("/api", headers=headers)
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert "access-control-allow-origin" not in response.headers


async def test_preflight_safelisted_headers_need_no_configuration() -> None:
    async with cors(allow_origins=[SITE], allow_methods=["POST"]) as http:
        response = await http.options("/", headers=preflight_headers(headers="Content-Type, accept"))
    assert response.status_code == 200


async def test_preflight_wildcards_echo_the_request() -> None:
    async with cors(allow_origins=["*"], allow_methods=["*"], allow_headers=["*"]) as http:
        response = await http.options("/", headers=preflight_headers(method="PATCH", headers="X-A, X-B"))
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.headers["access-control-allow-methods"] == "PATCH"
    assert response.headers["access-control-allow-headers"] == "x-a, x-b"
    assert "vary" not in response.headers


def test_credentials_with_any_origin_are_refused_naming_the_fix() -> None:
    with pytest.raises(ConfigurationError, match=r"list the origins.*allow_origins=\['https://app"):
        CORSMiddleware(echo_scope_app, allow_origins=["*"], allow_credentials=True)
    with pytest.raises(ConfigurationError, match="allow_credentials"):
        CORSMiddleware(echo_scope_app, allow_origins=[SITE, "*"], allow_credentials=True)


async def test_credentials_echo_a_listed_origin_never_star() -> None:
    async with cors(allow_origins=[SITE], allow_credentials=True, allow_methods=["POST"]) as http:
        pre = await http.options("/", headers=preflight_headers())
        simple = await http.get("/", headers={"origin": SITE})
    for response in (pre, simple):
        assert response.headers["access-control-allow-origin"] == SITE
        assert response.headers["access-control-allow-credentials"] == "true"
        assert response.headers["vary"] == "Origin"


async def test_simple_request_from_allowed_origin_gets_headers() -> None:
    async with cors(allow_origins=[SITE], expose_headers=["X-Count"]) as http:
        response = await http.get("/", headers={"origin": SITE})
    assert response.status_code == 200
    assert response.json()["user"] is None  # the app ran
    assert response.headers["access-control-allow-origin"] == SITE
    assert response.headers["access-control-expose-headers"] == "X-Count"
    assert response.headers["vary"] == "Origin"


async def test_simple_request_from_other_origin_gets_no_cors_headers() -> None:
    async with cors(allow_origins=[SITE]) as http:
        response = await http.get("/", headers={"origin": "https://evil.example"})
        no_origin = await http.get("/")
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
    assert response.headers["vary"] == "Origin"
    assert no_origin.headers["vary"] == "Origin"


async def test_star_without_credentials_needs_no_vary() -> None:
    async with cors(allow_origins=["*"]) as http:
        response = await http.get("/", headers={"origin": "https://anyone.example"})
        no_origin = await http.get("/")
    assert response.headers["access-control-allow-origin"] == "*"
    assert "vary" not in response.headers
    assert "vary" not in no_origin.headers


async def test_origins_compare_normalised() -> None:
    async with cors(allow_origins=["HTTPS://App.Example.org:443"]) as http:
        response = await http.get("/", headers={"origin": SITE})
    assert response.headers["access-control-allow-origin"] == SITE


async def test_origin_regex() -> None:
    async with cors(allow_origin_regex=r"https://[a-z]+\.example\.org") as http:
        ok = await http.get("/", headers={"origin": SITE})
        bad = await http.get("/", headers={"origin": "https://app.example.org.evil.example"})
    assert ok.headers["access-control-allow-origin"] == SITE
    assert "access-control-allow-origin" not in bad.headers


async def test_existing_vary_is_extended_and_app_cors_headers_replaced() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"vary", b"Accept-Encoding"), (b"access-control-allow-origin", b"*")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    async with client(CORSMiddleware(app, allow_origins=[SITE])) as http:
        response = await http.get("/", headers={"origin": SITE})
    assert response.headers["vary"] == "Accept-Encoding, Origin"
    assert response.headers.get_list("access-control-allow-origin") == [SITE]


async def test_options_without_request_method_reaches_the_app() -> None:
    async with cors(allow_origins=[SITE]) as http:
        response = await http.options("/", headers={"origin": SITE})
    assert response.status_code == 200
    assert "body" in response.json()


@pytest.mark.parametrize(
    "options",
    [{"allow_origins": ["example.com"]}, {"allow_origin_regex": "("}],
)
def test_bad_configuration(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        CORSMiddleware(echo_scope_app, **options)


async def test_websocket_and_lifespan_pass_through() -> None:
    seen = await passed_through(
        lambda app: CORSMiddleware(app, allow_origins=[SITE]),
        {"type": "lifespan"},
        {"type": "websocket", "headers": [(b"origin", b"x")]},
    )
    assert seen == ["lifespan", "websocket"]


latin = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=60)


@settings(max_examples=150, deadline=None)
@given(origin=latin, method=latin, requested=latin, credentials=st.booleans())
async def test_generated_preflights_never_crash(
    origin: str, method: str, requested: str, credentials: bool
) -> None:
    app = CORSMiddleware(
        echo_scope_app,
        allow_origins=[SITE, "http://localhost:3000"],
        allow_methods=["GET", "POST"],
        allow_headers=["x-token"],
        allow_credentials=credentials,
        allow_origin_regex=r"https://.*\.example\.net",
    )
    headers = {
        b"origin": origin.strip().encode("latin-1"),
        b"access-control-request-method": method.strip().encode("latin-1"),
        b"access-control-request-headers": requested.strip().encode("latin-1"),
    }
    async with client(app) as http:
        pre = await http.options("/", headers=headers)
        simple = await http.get("/", headers={b"origin": origin.strip().encode("latin-1")})
    assert pre.status_code in (200, 400)
    assert simple.status_code == 200
    for response in (pre, simple):
        allow = response.headers.get("access-control-allow-origin")
        assert allow in (None, origin.strip())

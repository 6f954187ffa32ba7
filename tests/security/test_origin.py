from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wirehall.errors import ConfigurationError
from wirehall.security._netloc import parse_origin, split_host
from wirehall.security.hosts import HostAllowlist
from wirehall.security.origin import WebSocketOriginMiddleware, is_same_origin

from ._asgi import client, echo_scope_app, handshake, passed_through, websocket_scope


async def connect(
    app: WebSocketOriginMiddleware,
    origin: str | None,
    host: str | None = "chat.example.com",
    scheme: str = "ws",
    **kwargs: Any,
) -> Any:
    headers = []
    if host is not None:
        headers.append(("host", host))
    if origin is not None:
        headers.append(("origin", origin))
    return await handshake(app, websocket_scope(headers=headers, scheme=scheme, **kwargs))


@pytest.mark.parametrize(
    ("origin", "host", "scheme"),
    [
        ("http://chat.example.com", "chat.example.com", "ws"),
        ("http://chat.example.com:80", "chat.example.com", "ws"),
        ("http://chat.example.com", "chat.example.com:80", "ws"),
        ("HTTP://Chat.Example.COM", "chat.example.com", "ws"),
        ("https://chat.example.com", "chat.example.com", "wss"),
        ("https://chat.example.com", "chat.example.com:443", "wss"),
        ("http://localhost:8000", "localhost:8000", "ws"),
        ("http://127.0.0.1:8000", "127.0.0.1:8000", "ws"),
        ("http://[::1]:8000", "[::1]:8000", "ws"),
        ("http://[::1]", "[::1]", "ws"),
        ("https://[2001:db8::1]", "[2001:DB8::1]:443", "wss"),
        ("http://chat.example.com", "chat.example.com.", "ws"),
    ],
)
async def test_own_origin_is_accepted(origin: str, host: str, scheme: str) -> None:
    app = WebSocketOriginMiddleware(echo_scope_app)
    assert (await connect(app, origin, host, scheme)).accepted


@pytest.mark.parametrize(
    ("origin", "host", "scheme"),
    [
        ("http://evil.example", "chat.example.com", "ws"),
        ("http://chat.example.com.evil.example", "chat.example.com", "ws"),
        ("http://chat.example.com:8080", "chat.example.com", "ws"),
        ("http://chat.example.com", "chat.example.com:8080", "ws"),
        ("https://chat.example.com", "chat.example.com", "ws"),  # scheme differs
        ("http://chat.example.com", "chat.example.com", "wss"),
        ("http://[::1]:8001", "[::1]:8000", "ws"),
        ("http://[::2]:8000", "[::1]:8000", "ws"),
        ("null", "chat.example.com", "ws"),
        ("", "chat.example.com", "ws"),
        ("http://chat.example.com/path", "chat.example.com", "ws"),
        ("http://user@chat.example.com", "chat.example.com", "ws"),
        ("http://chat.example.com", "bad host!", "ws"),
        ("http://chat.example.com", None, "ws"),  # no Host; server is testserver
    ],
)
async def test_foreign_origin_is_refused_with_1008(origin: str, host: str | None, scheme: str) -> None:
    app = WebSocketOriginMiddleware(echo_scope_app)
    result = await connect(app, origin, host, scheme)
    assert not result.accepted
    assert result.refused
    assert result.close_code == 1008


async def test_refusal_uses_http_denial_extension_when_offered() -> None:
    app = WebSocketOriginMiddleware(echo_scope_app)
    result = await connect(app, "http://evil.example", extensions={"websocket.http.response": {}})
    assert result.http_status == 403
    assert msgspec.json.decode(result.http_body) == {"error": "WebSocket origin not allowed"}
    assert not result.accepted


async def test_missing_origin_is_accepted_unless_configured() -> None:
    assert (await connect(WebSocketOriginMiddleware(echo_scope_app), None)).accepted
    strict = WebSocketOriginMiddleware(echo_scope_app, allow_missing=False)
    assert (await connect(strict, None)).close_code == 1008
    assert (await connect(strict, "http://chat.example.com")).accepted


async def test_allow_list_exact_and_wildcard() -> None:
    app = WebSocketOriginMiddleware(
        echo_scope_app,
        ["https://app.example.org", "http://localhost:3000", "https://*.partner.net"],
    )
    assert (await connect(app, "https://app.example.org")).accepted
    assert (await connect(app, "https://app.example.org:443")).accepted
    assert (await connect(app, "http://localhost:3000")).accepted
    assert (await connect(app, "https://a.partner.net")).accepted
    assert (await connect(app, "https://a.b.partner.net")).accepted
    assert (await connect(app, "http://chat.example.com")).accepted  # own origin still fine
    assert not (await connect(app, "http://app.example.org")).accepted
    assert not (await connect(app, "http://localhost:3001")).accepted
    assert not (await connect(app, "https://partner.net")).accepted
    assert not (await connect(app, "https://evilpartner.net")).accepted
    assert not (await connect(app, "http://a.partner.net")).accepted


async def test_star_allows_everything() -> None:
    app = WebSocketOriginMiddleware(echo_scope_app, ["*"])
    assert (await connect(app, "http://evil.example")).accepted
    assert (await connect(app, "null")).accepted


async def test_same_origin_from_server_address_without_host_header() -> None:
    app = WebSocketOriginMiddleware(echo_scope_app)
    result = await connect(app, "http://127.0.0.1:9000", host=None, server=("127.0.0.1", 9000))
    assert result.accepted
    v6 = await connect(app, "http://[::1]:9000", host=None, server=("::1", 9000))
    assert v6.accepted


@pytest.mark.parametrize("entry", ["example.com", "https://", "https://example.com/path", ""])
def test_bad_allow_list_entry_is_a_configuration_error(entry: str) -> None:
    with pytest.raises(ConfigurationError, match="not an origin"):
        WebSocketOriginMiddleware(echo_scope_app, [entry])


async def test_http_requests_pass_untouched() -> None:
    app = WebSocketOriginMiddleware(echo_scope_app)
    async with client(app) as http:
        response = await http.get("/", headers={"origin": "http://evil.example"})
    assert response.status_code == 200


async def test_client_gone_before_connect_sends_nothing() -> None:
    app = WebSocketOriginMiddleware(echo_scope_app)
    sent: list[Any] = []

    async def receive() -> Any:
        return {"type": "websocket.disconnect", "code": 1006}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = websocket_scope(headers=[("origin", "http://evil.example")])
    await app(scope, receive, send)
    assert sent == []


async def test_lifespan_passes_through() -> None:
    assert await passed_through(WebSocketOriginMiddleware, {"type": "lifespan"}) == ["lifespan"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("example.com", ("example.com", None)),
        ("EXAMPLE.com:8080", ("example.com", 8080)),
        ("[::1]:1", ("[::1]", 1)),
        ("[::1]", ("[::1]", None)),
        ("example.com:", None),
        ("example.com:99999", None),
        ("example.com:8a", None),
        ("[::1", None),
        ("[::1]x", None),
        ("::1", None),
        ("", None),
        ("ex ample.com", None),
        ("exämple.com", None),
        ("a:b:c", None),
    ],
)
def test_split_host(value: str, expected: Any) -> None:
    assert split_host(value) == expected


def test_parse_origin() -> None:
    assert parse_origin("https://example.com") == ("https", "example.com", 443)
    assert parse_origin("http://example.com:8080") == ("http", "example.com", 8080)
    assert parse_origin("chrome-extension://abcdef") == ("chrome-extension", "abcdef", 0)
    assert parse_origin("null") is None
    assert parse_origin("://example.com") is None
    assert parse_origin("1http://example.com") is None


@settings(max_examples=200, deadline=None)
@given(
    origin=st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=60),
    host=st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=40),
    scheme=st.sampled_from(["ws", "wss"]),
)
async def test_generated_origins_and_hosts_never_crash(origin: str, host: str, scheme: str) -> None:
    app = WebSocketOriginMiddleware(echo_scope_app, ["https://*.example.com", "http://ok.test"])
    result = await connect(app, origin, host, scheme)
    assert result.accepted or result.close_code == 1008
    assert result.accepted == (
        parse_origin(origin.strip()) is not None
        and (
            origin.strip().lower() == "http://ok.test"
            or _own(origin.strip(), host, scheme)
            or _wildcard(origin.strip())
        )
    )


def _own(origin: str, host: str, scheme: str) -> bool:
    parsed = parse_origin(origin)
    split = split_host(host.strip())
    if parsed is None or split is None:
        return False
    want = {"ws": ("http", 80), "wss": ("https", 443)}[scheme]
    return parsed == (want[0], split[0], split[1] if split[1] is not None else want[1])


def _wildcard(origin: str) -> bool:
    parsed = parse_origin(origin)
    return (
        parsed is not None
        and parsed[0] == "https"
        and parsed[2] == 443
        and parsed[1].endswith(".example.com")
    )


@settings(max_examples=100, deadline=None)
@given(
    host=st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\.[a-z]{2,6}){0,2}", fullmatch=True),
    port=st.integers(1, 65535),
)
async def test_generated_own_origins_are_accepted(host: str, port: int) -> None:
    app = WebSocketOriginMiddleware(echo_scope_app)
    assert (await connect(app, f"http://{host}:{port}", f"{host}:{port}")).accepted
    assert (await connect(app, f"https://{host}:{port}", f"{host.upper()}:{port}", "wss")).accepted
    other = port + 1 if port < 65535 else 1
    assert not (await connect(app, f"http://{host}:{other}", f"{host}:{port}")).accepted


async def test_a_rebinding_host_is_not_the_apps_own_origin_when_hosts_are_listed() -> None:
    # a page on evil.com whose name now points at 127.0.0.1: Host and Origin agree
    trusting = WebSocketOriginMiddleware(echo_scope_app)
    assert (await connect(trusting, "http://evil.com", host="evil.com")).accepted
    guarded = WebSocketOriginMiddleware(echo_scope_app, allowed_hosts=["localhost", "127.0.0.1"])
    refused = await connect(guarded, "http://evil.com", host="evil.com")
    assert not refused.accepted
    assert (await connect(guarded, "http://localhost:8000", host="localhost:8000")).accepted
    assert (await connect(guarded, "http://127.0.0.1:8000", host="127.0.0.1:8000")).accepted


async def test_allowed_origins_still_pass_whatever_the_host_list() -> None:
    app = WebSocketOriginMiddleware(
        echo_scope_app, ["https://app.example.com"], allowed_hosts=["api.example.com"]
    )
    assert (await connect(app, "https://app.example.com", host="api.example.com", scheme="wss")).accepted
    assert (await connect(app, "*", host="api.example.com")).accepted is False


def test_is_same_origin_does_not_trust_a_host_outside_the_list() -> None:
    scope = websocket_scope(headers=[("host", "evil.com:8000")])
    origin = parse_origin("http://evil.com:8000")
    assert origin is not None
    assert is_same_origin(origin, scope)
    assert not is_same_origin(origin, scope, HostAllowlist(["localhost"]))
    assert is_same_origin(origin, scope, HostAllowlist(["*"]))

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wirehall import WebSocketController, Wirehall
from wirehall.errors import ConfigurationError
from wirehall.security.hosts import (
    HostAllowlist,
    TrustedHostMiddleware,
    allowed_hosts_from_env,
    is_loopback_address,
)
from wirehall.testing import TestClient

from ._asgi import client, echo_scope_app, handshake, passed_through, websocket_scope

ALLOWED = ["example.com", "*.example.org", "127.0.0.1", "[::1]", "LocalHost"]


async def get(host: str | bytes | None, allowed: list[str] = ALLOWED) -> Any:
    app = TrustedHostMiddleware(echo_scope_app, allowed)
    responses: list[Any] = []

    async def send(message: Any) -> None:
        responses.append(message)

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    headers = [] if host is None else [(b"host", host if isinstance(host, bytes) else host.encode())]
    await app(
        {"type": "http", "method": "GET", "path": "/", "headers": headers, "scheme": "http"},
        receive,
        send,
    )
    return responses


def status(responses: list[Any]) -> int:
    return int(responses[0]["status"])


@pytest.mark.parametrize(
    "host",
    [
        "example.com",
        "EXAMPLE.com:8000",
        "example.com.",
        "a.example.org",
        "a.b.example.org:443",
        "127.0.0.1:8000",
        "[::1]:8000",
        "[::1]",
        "localhost",
    ],
)
async def test_allowed_hosts_pass(host: str) -> None:
    assert status(await get(host)) == 200


@pytest.mark.parametrize(
    "host",
    [
        "evil.com",
        "example.com.evil.com",
        "notexample.com",
        "example.org",  # the wildcard is for subdomains only
        "aexample.org",
        "[::2]",
        "127.0.0.2",
        "",
        "example.com:",
        "example.com:abc",
        "example.com/path",
        "exa mple.com",
        None,
    ],
)
async def test_other_hosts_get_400_json(host: str | None) -> None:
    responses = await get(host)
    assert status(responses) == 400
    assert msgspec.json.decode(responses[1]["body"]) == {"error": "invalid Host header"}


async def test_through_httpx() -> None:
    app = TrustedHostMiddleware(echo_scope_app, ["testserver"])
    async with client(app) as http:
        assert (await http.get("/")).status_code == 200
        response = await http.get("/", headers={"host": "evil.example"})
    assert response.status_code == 400
    assert response.json() == {"error": "invalid Host header"}


async def test_default_allows_everything() -> None:
    assert status(await get("anything.at.all", ["*"])) == 200
    assert status(await get(None, ["*"])) == 200


async def test_websocket_with_bad_host_is_refused() -> None:
    app = TrustedHostMiddleware(echo_scope_app, ["example.com"])
    good = await handshake(app, websocket_scope(headers=[("host", "example.com")]))
    assert good.accepted
    bad = await handshake(app, websocket_scope(headers=[("host", "evil.com")]))
    assert not bad.accepted
    assert bad.close_code == 1008
    denial = await handshake(
        app,
        websocket_scope(headers=[("host", "evil.com")], extensions={"websocket.http.response": {}}),
    )
    assert denial.http_status == 400


@pytest.mark.parametrize("entry", ["https://example.com", "example.com:80", "*.", "", "a b"])
def test_bad_configuration(entry: str) -> None:
    with pytest.raises(ConfigurationError, match="not a host name"):
        TrustedHostMiddleware(echo_scope_app, [entry])


async def test_lifespan_passes_through() -> None:
    seen = await passed_through(lambda app: TrustedHostMiddleware(app, ["example.com"]), {"type": "lifespan"})
    assert seen == ["lifespan"]


@settings(max_examples=200, deadline=None)
@given(host=st.binary(max_size=60))
async def test_generated_hosts_never_crash(host: bytes) -> None:
    responses = await get(host)
    assert status(responses) in (200, 400)
    if status(responses) == 200:
        name = host.decode("latin-1").strip().lower().rsplit(":", 1)[0].rstrip(".")
        assert name in ("example.com", "127.0.0.1", "[::1]", "localhost") or name.endswith(".example.org")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LocalHost.", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.2", False),
        ("example.com", False),
    ],
)
def test_is_loopback_address(host: str, loopback: bool) -> None:
    assert is_loopback_address(host) is loopback


def test_allowed_hosts_from_env() -> None:
    assert allowed_hosts_from_env({}) is None
    assert allowed_hosts_from_env({"WIREHALL_ALLOWED_HOSTS": " , "}) is None
    assert allowed_hosts_from_env({"WIREHALL_ALLOWED_HOSTS": "a.example, *.b.example "}) == (
        "a.example",
        "*.b.example",
    )
    with pytest.raises(ConfigurationError, match=r"WIREHALL_ALLOWED_HOSTS='http://x'.*not a host name"):
        allowed_hosts_from_env({"WIREHALL_ALLOWED_HOSTS": "http://x"})


def test_host_allowlist_describes_itself() -> None:
    assert (
        HostAllowlist(["b.example", "a.example", "*.c.example"]).describe()
        == "a.example, b.example, *.c.example"
    )
    assert HostAllowlist(["*", "a.example"]).describe() == "*"


def host_app(**options: Any) -> Wirehall:
    app = Wirehall(backplane="memory://", **options)

    @app.get("/")
    async def home() -> dict[str, str]:
        return {"status": "ok"}

    @app.websocket("/ws")
    class Echo(WebSocketController):
        pass

    return app


@pytest.mark.parametrize(
    ("options", "env", "host", "expected"),
    [
        ({"allowed_hosts": ["localhost"]}, None, "localhost:8000", 200),
        ({"allowed_hosts": ["localhost"]}, None, "evil.com", 400),
        ({}, "localhost,127.0.0.1", "127.0.0.1:8000", 200),
        ({}, "localhost,127.0.0.1", "evil.com", 400),
        ({}, None, "evil.com", 200),  # no list anywhere: any host
        ({"allowed_hosts": ["*"]}, "localhost", "evil.com", 200),  # the app's own setting wins
    ],
)
async def test_the_apps_allowed_hosts_refuse_other_hosts(
    monkeypatch: pytest.MonkeyPatch, options: dict[str, Any], env: str | None, host: str, expected: int
) -> None:
    if env is None:
        monkeypatch.delenv("WIREHALL_ALLOWED_HOSTS", raising=False)
    else:
        monkeypatch.setenv("WIREHALL_ALLOWED_HOSTS", env)
    app = host_app(**options)
    async with TestClient(app) as test_client:
        response = await test_client.get("/", headers={"host": host})
        assert response.status_code == expected


async def test_the_apps_allowed_hosts_refuse_websocket_handshakes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WIREHALL_ALLOWED_HOSTS", raising=False)
    app = host_app(allowed_hosts=["localhost"])
    scope = websocket_scope(path="/ws", headers=[("host", "evil.com"), ("origin", "http://evil.com")])
    refused = await handshake(app, scope)
    assert not refused.accepted
    ok = await handshake(
        app, websocket_scope(path="/ws", headers=[("host", "localhost"), ("origin", "http://localhost")])
    )
    assert ok.accepted

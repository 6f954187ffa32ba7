from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wirehall.errors import ConfigurationError
from wirehall.security.hosts import TrustedHostMiddleware

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

"""Fixtures shared by the whole suite: service requirements (Redis, a browser) and ports."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
CHROMIUM = os.environ.get("WIREHALL_CHROMIUM", "/usr/bin/chromium")


def _required(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0", "false", "no")


def _unavailable(reason: str, requirement: str) -> None:
    """Skip, or fail when the environment says the service is required (as CI does)."""
    if _required(requirement):
        pytest.fail(f"{reason}, and {requirement}=1 says it must be there", pytrace=False)
    pytest.skip(reason)


def _redis_reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_server_url() -> str:
    """The Redis server's URL (no prefix); skips or fails when it is unreachable."""
    if not _redis_reachable(REDIS_URL):
        _unavailable(f"Redis is not reachable at {REDIS_URL}", "WIREHALL_REQUIRE_REDIS")
    return REDIS_URL


@pytest.fixture
def redis_url(redis_server_url: str) -> Iterator[str]:
    """A Redis backplane URL with a key prefix of its own (its keys deleted afterwards)."""
    import redis

    prefix = f"wirehall-test-{secrets.token_hex(6)}"
    separator = "&" if "?" in redis_server_url else "?"
    yield f"{redis_server_url}{separator}prefix={prefix}"
    client = redis.Redis.from_url(redis_server_url, socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Debian's Chromium, for playwright's `executable_path`; skips or fails when missing."""
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        _unavailable(f"Chromium is not installed at {CHROMIUM}", "WIREHALL_REQUIRE_BROWSER")
    try:
        import playwright  # noqa: F401
    except ImportError:
        _unavailable("the playwright package is not installed", "WIREHALL_REQUIRE_BROWSER")
    return CHROMIUM if os.path.exists(CHROMIUM) else str(shutil.which("chromium"))


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def unused_port() -> int:
    """A free loopback port for a test server."""
    return free_port()

"""Fixtures shared by the whole suite: service requirements (Redis, PostgreSQL, a browser), ports,
and the two WebSocket paths.

Every test that opens a WebSocket runs on both paths, `test_x[asgi]` and `test_x[native]`:
it asks for the `websocket_path` fixture (directly, through a server fixture that does, or
with `pytest.mark.usefixtures("websocket_path")`). On `asgi` the in-process test client calls
the app through plain ASGI and real servers use uvicorn's `websockets-sansio`; on `native`
both go through wirehall's own WebSocket protocol. A test that opens an in-process WebSocket
without asking for the fixture fails and says so.

A test parametrised over PostgreSQL runs that parameter on the native path only: the database
and the WebSocket path are independent, and the SQLite parameter covers both paths (the
PostgreSQL cluster tests are among the slowest to double). `--websocket-path native` runs one
path only (with every database); `--native-protocol websockets-sansio` puts another protocol
class behind `native` (to tell a test client's fault from the protocol's).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from wirehall.testing import _native as testing_native

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
CHROMIUM = os.environ.get("WIREHALL_CHROMIUM", "/usr/bin/chromium")
# The PostgreSQL server (its maintenance database): each test gets a database of its own on it.
POSTGRES_URL = os.environ.get("POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


WEBSOCKET_PATHS = ("asgi", "native")
# `--ws` of a real server (uvicorn's or `wirehall run`'s) on each path
SERVER_WS = {"asgi": "websockets-sansio", "native": testing_native.NATIVE_PROTOCOL}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("wirehall")
    group.addoption(
        "--websocket-path",
        action="append",
        choices=WEBSOCKET_PATHS,
        help="run the WebSocket tests on this path only (repeatable; default: both)",
    )
    group.addoption(
        "--native-protocol",
        default="native",
        help="the WebSocket protocol class behind the native path: 'native' (wirehall's), a uvicorn "
        "--ws name such as websockets-sansio, or module:Class",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "websocket_path" in metafunc.fixturenames:
        paths = metafunc.config.getoption("websocket_path") or WEBSOCKET_PATHS
        metafunc.parametrize("websocket_path", list(dict.fromkeys(paths)), indirect=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if len(set(config.getoption("websocket_path") or WEBSOCKET_PATHS)) < len(WEBSOCKET_PATHS):
        return  # one path chosen: every database on it
    kept: list[pytest.Item] = []
    paired: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_asgi = callspec is not None and callspec.params.get("websocket_path") == "asgi"
        (paired if on_asgi and item.get_closest_marker("postgres") else kept).append(item)
    if paired:
        config.hook.pytest_deselected(items=paired)
        items[:] = kept


@pytest.fixture(scope="module")
def websocket_path(request: pytest.FixtureRequest) -> str:
    """The WebSocket path this test runs on, "asgi" or "native" (every test asking for it runs on both)."""
    path: str = request.param
    return path


def ws_for(config: pytest.Config, path: str) -> str:
    """The `--ws` value a real server (uvicorn or `wirehall run`) is started with on `path`."""
    native: str = config.getoption("native_protocol")
    if path == "native" and native != "native":
        return native
    return SERVER_WS[path]


@pytest.fixture(scope="module")
def server_ws(request: pytest.FixtureRequest, websocket_path: str) -> str:
    """The `--ws` value for a server process on this test's WebSocket path (asks for `websocket_path`)."""
    return ws_for(request.config, websocket_path)


@pytest.fixture(autouse=True)
def _websocket_default(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the test client's default WebSocket path at this test's, or forbid a default."""
    if "websocket_path" in request.fixturenames:
        path = request.getfixturevalue("websocket_path")
        chosen = request.config.getoption("native_protocol") if path == "native" else path
        monkeypatch.setenv(testing_native.DEFAULT_WEBSOCKET_ENV, chosen)
        return
    resolve = testing_native.websocket_protocol

    def one_path_only(choice: testing_native.WebSocketPath | None) -> type[asyncio.Protocol] | None:
        if choice is None:
            pytest.fail(
                f"{request.node.nodeid} opens a WebSocket without the websocket_path fixture: ask for it "
                "(or pytest.mark.usefixtures('websocket_path')) so that it runs on both paths, or "
                "pass websocket='asgi'/'native' to the client when only one path is meant",
                pytrace=False,
            )
        return resolve(choice)

    monkeypatch.setattr("wirehall.testing.websocket.websocket_protocol", one_path_only)


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


def postgres_execute(url: str, *statements: str) -> None:
    """Run `statements` on `url` with asyncpg, in a thread of its own (no test loop is touched)."""
    import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type hints

    async def run() -> None:
        conn = await asyncpg.connect(url, timeout=5)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    failure: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(run())
        except BaseException as exc:  # noqa: BLE001  # re-raised in the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=target, name="postgres-admin")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


def _postgres_reachable(url: str) -> bool:
    try:
        postgres_execute(url, "SELECT 1")
    except Exception:  # noqa: BLE001  # any failure to connect means "not reachable"
        return False
    return True


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """The PostgreSQL maintenance database's URL; skips or fails when it is unreachable."""
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        _unavailable("asyncpg is not installed (pip install -e '.[examples]')", "WIREHALL_REQUIRE_POSTGRES")
    if not _postgres_reachable(POSTGRES_URL):
        _unavailable(f"PostgreSQL is not reachable at {POSTGRES_URL}", "WIREHALL_REQUIRE_POSTGRES")
    return POSTGRES_URL


@pytest.fixture
def postgres_database_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, as a SQLAlchemy asyncpg URL; dropped afterwards."""
    name = f"wirehall_test_{secrets.token_hex(6)}"
    postgres_execute(postgres_server_url, f'CREATE DATABASE "{name}"')
    parts = urlsplit(postgres_server_url)
    yield parts._replace(scheme="postgresql+asyncpg", path=f"/{name}").geturl()
    postgres_execute(postgres_server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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

"""`TestClient`: drive an app in-process over HTTP and WebSocket, lifespan included."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from wirehall.errors import WirehallError
from wirehall.testing.websocket import WebSocketPath, WebSocketTestSession
from wirehall.types import ASGIApp, Message

__all__ = ["LifespanError", "TestClient"]


class LifespanError(WirehallError):
    """The app's startup or shutdown failed."""


class _Lifespan:
    def __init__(self, app: ASGIApp, timeout: float) -> None:
        self.app = app
        self.timeout = timeout
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.outbox: asyncio.Queue[Message] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.3"}, "state": {}}
        try:
            await self.app(scope, self.inbox.get, self.outbox.put)
        finally:
            await self.outbox.put({"type": "lifespan.ended"})

    async def _expect(self, wanted: str) -> None:
        message = await asyncio.wait_for(self.outbox.get(), self.timeout)
        if message["type"] == f"{wanted}.failed":
            raise LifespanError(f"{wanted} failed: {message.get('message', '')}")
        if message["type"] == "lifespan.ended":
            assert self.task is not None
            if self.task.done() and self.task.exception() is not None:
                raise LifespanError(f"{wanted} failed") from self.task.exception()
            return  # the app does not support lifespan
        if message["type"] != f"{wanted}.complete":
            raise LifespanError(f"expected {wanted}.complete, got {message['type']}")

    async def startup(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())
        await self.inbox.put({"type": "lifespan.startup"})
        await self._expect("lifespan.startup")

    async def shutdown(self) -> None:
        assert self.task is not None
        if self.task.done():
            return
        await self.inbox.put({"type": "lifespan.shutdown"})
        try:
            await self._expect("lifespan.shutdown")
        finally:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self.task, self.timeout)


class TestClient:
    """An async client for an ASGI app, with no network: `async with TestClient(app) as client:`.

    HTTP methods return `httpx.Response`; cookies set by the app are kept and sent again,
    WebSocket handshakes included. `websocket` picks how WebSockets reach the app: `"asgi"`
    (plain ASGI calls) or `"native"` (wirehall's own WebSocket protocol over an in-memory
    transport, as `wirehall run` serves them); unset, the environment variable
    WIREHALL_TEST_WEBSOCKET decides, and without it the path is `"asgi"`.
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        app: ASGIApp,
        base_url: str = "http://testserver",
        *,
        headers: Mapping[str, str] | None = None,
        lifespan: bool = True,
        timeout: float = 5.0,
        client: tuple[str, int] = ("127.0.0.1", 50000),
        websocket: WebSocketPath | None = None,
    ) -> None:
        self.app = app
        self.base_url = base_url
        self.websocket = websocket
        self.timeout = timeout
        self.client_address = client
        self._lifespan = _Lifespan(app, timeout) if lifespan else None
        self.http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=client),
            base_url=base_url,
            headers=dict(headers or {}),
            timeout=timeout,
        )

    async def __aenter__(self) -> TestClient:
        if self._lifespan is not None:
            await self._lifespan.startup()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.http.aclose()
        if self._lifespan is not None:
            await self._lifespan.shutdown()

    @property
    def cookies(self) -> httpx.Cookies:
        """Cookies the client holds."""
        return self.http.cookies

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send a request (the arguments of `httpx.AsyncClient.request`)."""
        return await self.http.request(method, url, **kwargs)

    async def get(self, url: str, **kwargs: Any) -> httpx.Response:
        """GET `url`."""
        return await self.http.get(url, **kwargs)

    async def head(self, url: str, **kwargs: Any) -> httpx.Response:
        """HEAD `url`."""
        return await self.http.head(url, **kwargs)

    async def options(self, url: str, **kwargs: Any) -> httpx.Response:
        """OPTIONS `url`."""
        return await self.http.options(url, **kwargs)

    async def post(self, url: str, **kwargs: Any) -> httpx.Response:
        """POST to `url`."""
        return await self.http.post(url, **kwargs)

    async def put(self, url: str, **kwargs: Any) -> httpx.Response:
        """PUT `url`."""
        return await self.http.put(url, **kwargs)

    async def patch(self, url: str, **kwargs: Any) -> httpx.Response:
        """PATCH `url`."""
        return await self.http.patch(url, **kwargs)

    async def delete(self, url: str, **kwargs: Any) -> httpx.Response:
        """DELETE `url`."""
        return await self.http.delete(url, **kwargs)

    def websocket_scope(
        self,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        subprotocols: Iterable[str] = (),
    ) -> dict[str, Any]:
        """The ASGI scope of a WebSocket handshake to `path` (exposed for custom sessions)."""
        base = urlsplit(self.base_url)
        parts = urlsplit(path)
        scheme = "wss" if base.scheme == "https" else "ws"
        host = base.netloc or "testserver"
        raw_headers = [(b"host", host.encode("latin-1"))]
        cookie = "; ".join(f"{name}={value}" for name, value in self.http.cookies.items())
        supplied = {k.lower(): v for k, v in (headers or {}).items()}
        if cookie and "cookie" not in supplied:
            raw_headers.append((b"cookie", cookie.encode("latin-1")))
        for key, value in self.http.headers.items():
            if key.lower() not in supplied and key.lower() not in (
                "host",
                "accept-encoding",
                "connection",
            ):
                raw_headers.append((key.lower().encode("latin-1"), value.encode("latin-1")))
        raw_headers.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in supplied.items())
        protocols = list(subprotocols)
        if protocols:
            raw_headers.append((b"sec-websocket-protocol", ", ".join(protocols).encode("latin-1")))
        port = base.port or (443 if scheme == "wss" else 80)
        return {
            "type": "websocket",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "scheme": scheme,
            "server": (base.hostname or "testserver", port),
            "client": self.client_address,
            "root_path": "",
            "path": unquote(parts.path or "/"),
            "raw_path": (parts.path or "/").encode("latin-1"),
            "query_string": parts.query.encode("latin-1"),
            "headers": raw_headers,
            "subprotocols": protocols,
            "extensions": {"websocket.http.response": {}},
            "state": {},
        }

    @contextlib.asynccontextmanager
    async def websocket_connect(
        self,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        subprotocols: Iterable[str] = (),
        timeout: float | None = None,
    ) -> AsyncIterator[WebSocketTestSession]:
        """Open a WebSocket to `path` in-process: `async with client.websocket_connect(...) as ws:`.

        Raises `HandshakeRejectedError` (with `.status`) when the app refuses the handshake.
        """
        scope = self.websocket_scope(path, headers=headers, subprotocols=subprotocols)
        async with WebSocketTestSession(
            self.app, scope, timeout=timeout or self.timeout, websocket=self.websocket
        ) as session:
            yield session

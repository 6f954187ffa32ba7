"""`SyncTestClient`: the in-process client for plain `def test_...()` functions.

It runs the app on an event loop of its own, in a portal thread (as Starlette's TestClient
does), and drives the async `TestClient` there: the same requests, cookies, WebSocket
sessions and lifespan, called without `await`.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, TypeVar

import httpx
from anyio.from_thread import BlockingPortal, start_blocking_portal

from wirehall.errors import WirehallError
from wirehall.testing.client import TestClient
from wirehall.testing.websocket import WebSocketPath, WebSocketTestSession
from wirehall.types import ASGIApp
from wirehall.websocket.codes import CloseCode

__all__ = ["SyncTestClient", "SyncWebSocketSession"]

T = TypeVar("T")


class SyncWebSocketSession:
    """One in-process WebSocket connection, driven synchronously (`WebSocketTestSession`'s
    methods without `await`)."""

    def __init__(self, portal: BlockingPortal, session: WebSocketTestSession) -> None:
        self._portal = portal
        self.session = session
        """The async session underneath (its `close_code`, `subprotocol`, `headers`)."""

    def _call(self, func: Callable[..., Awaitable[T]], *args: Any) -> T:
        return self._portal.call(func, *args)

    @property
    def close_code(self) -> int | None:
        """The code of the close (from either side), once closed."""
        return self.session.close_code

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol the app accepted, if any."""
        return self.session.subprotocol

    def send_text(self, text: str) -> None:
        """Send a text frame to the app."""
        self._call(self.session.send_text, text)

    def send_bytes(self, data: bytes) -> None:
        """Send a binary frame to the app."""
        self._call(self.session.send_bytes, data)

    def send_json(self, data: Any) -> None:
        """Send `data` as JSON in a text frame."""
        self._call(self.session.send_json, data)

    def receive(self, timeout: float | None = None) -> str | bytes:
        """The next message from the app (see `WebSocketTestSession.receive`)."""
        return self._call(self.session.receive, timeout)

    def receive_text(self, timeout: float | None = None) -> str:
        """The next message, which must be a text frame."""
        return self._call(self.session.receive_text, timeout)

    def receive_bytes(self, timeout: float | None = None) -> bytes:
        """The next message, which must be a binary frame."""
        return self._call(self.session.receive_bytes, timeout)

    def receive_json(self, timeout: float | None = None) -> Any:
        """The next message decoded as JSON."""
        return self._call(self.session.receive_json, timeout)

    def receive_close(self, timeout: float | None = None) -> int:
        """Wait for the app to close (skipping messages before it); returns the close code."""
        return self._call(self.session.receive_close, timeout)

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Close from the client's side."""
        self._call(self.session.close, code, reason)


class SyncTestClient:
    """A synchronous client for an ASGI app, with no network: `with SyncTestClient(app) as client:`.

    Entering starts an event loop in a thread and the app's lifespan on it; leaving shuts the
    app down and stops the loop. HTTP methods return `httpx.Response`; the async `TestClient`
    does the work (its options are the same), so cookies and WebSocket handshakes behave alike.
    Use it from plain `def` tests; in `async def` tests use `TestClient`.
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
        self._options: dict[str, Any] = {
            "websocket": websocket,
            "base_url": base_url,
            "headers": headers,
            "lifespan": lifespan,
            "timeout": timeout,
            "client": client,
        }
        self._stack: contextlib.ExitStack | None = None
        self._portal: BlockingPortal | None = None
        self._client: TestClient | None = None

    def __enter__(self) -> SyncTestClient:
        if self._stack is not None:
            raise WirehallError("this SyncTestClient is entered already; enter it once at a time")
        with contextlib.ExitStack() as stack:
            portal = stack.enter_context(start_blocking_portal(backend="asyncio"))
            client = portal.call(self._make_client)
            stack.enter_context(portal.wrap_async_context_manager(client))
            self._portal, self._client = portal, client
            self._stack = stack.pop_all()
        return self

    async def _make_client(self) -> TestClient:
        return TestClient(self.app, **self._options)  # made on the app's loop

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        self._portal = self._client = None
        if stack is not None:
            stack.__exit__(exc_type, exc, tb)

    def _running(self) -> tuple[BlockingPortal, TestClient]:
        if self._portal is None or self._client is None:
            raise WirehallError(
                "SyncTestClient runs the app only inside `with SyncTestClient(app) as client:`"
            )
        return self._portal, self._client

    @property
    def cookies(self) -> httpx.Cookies:
        """Cookies the client holds."""
        return self._running()[1].cookies

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send a request (the arguments of `httpx.Client.request`)."""
        portal, client = self._running()
        return portal.call(functools.partial(client.request, method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        """GET `url`."""
        return self.request("GET", url, **kwargs)

    def head(self, url: str, **kwargs: Any) -> httpx.Response:
        """HEAD `url`."""
        return self.request("HEAD", url, **kwargs)

    def options(self, url: str, **kwargs: Any) -> httpx.Response:
        """OPTIONS `url`."""
        return self.request("OPTIONS", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        """POST to `url`."""
        return self.request("POST", url, **kwargs)

    def put(self, url: str, **kwargs: Any) -> httpx.Response:
        """PUT `url`."""
        return self.request("PUT", url, **kwargs)

    def patch(self, url: str, **kwargs: Any) -> httpx.Response:
        """PATCH `url`."""
        return self.request("PATCH", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> httpx.Response:
        """DELETE `url`."""
        return self.request("DELETE", url, **kwargs)

    @contextlib.contextmanager
    def websocket_connect(
        self,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        subprotocols: Iterable[str] = (),
        timeout: float | None = None,
    ) -> Iterator[SyncWebSocketSession]:
        """Open a WebSocket to `path`: `with client.websocket_connect("/ws") as ws:`.

        Raises `HandshakeRejectedError` (with `.status`) when the app refuses the handshake.
        """
        portal, client = self._running()
        connecting = client.websocket_connect(
            path, headers=headers, subprotocols=subprotocols, timeout=timeout
        )
        with portal.wrap_async_context_manager(connecting) as session:
            yield SyncWebSocketSession(portal, session)

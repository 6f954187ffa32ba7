"""A cap on simultaneous WebSocket connections per client address.

Off unless asked for: clients behind one proxy or NAT share an address, so a cap that
suits a crowd of home users may lock out an office. Behind a reverse proxy, run the
server with proxy headers trusted (uvicorn `--forwarded-allow-ips`) so that
`scope["client"]` is the real client, not the proxy.
"""

from __future__ import annotations

import logging

from wirehall.errors import ConfigurationError
from wirehall.types import ASGIApp, Receive, Scope, Send
from wirehall.websocket._native import defer_until_closed
from wirehall.websocket.handler import WebSocketHandler

__all__ = ["AddressCounter", "ConnectionLimitMiddleware"]

logger = logging.getLogger(__name__)


class AddressCounter:
    """How many connections each client address holds; `acquire` refuses one past `limit`.

    Plain bookkeeping (no I/O): every `acquire` that returned True needs one `release`.
    An address holding nothing is forgotten, so the table only holds open connections.
    """

    __slots__ = ("_counts", "limit")

    def __init__(self, limit: int) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigurationError(
                f"the connection limit per address must be a whole number of at least 1, got {limit!r}"
            )
        self.limit = limit
        self._counts: dict[str, int] = {}

    def acquire(self, address: str) -> bool:
        """Count one more connection from `address`: True, or False (not counted) at the limit."""
        held = self._counts.get(address, 0)
        if held >= self.limit:
            return False
        self._counts[address] = held + 1
        return True

    def release(self, address: str) -> None:
        """One connection from `address` ended."""
        held = self._counts.get(address, 0)
        if held <= 1:
            self._counts.pop(address, None)
        else:
            self._counts[address] = held - 1

    def count(self, address: str) -> int:
        """Connections `address` holds now."""
        return self._counts.get(address, 0)

    def __len__(self) -> int:
        """How many addresses hold at least one connection."""
        return len(self._counts)


class ConnectionLimitMiddleware:
    """Refuse a WebSocket handshake (HTTP 429) from an address holding `max_per_address` already.

    The count is taken before the app sees the handshake and given back when the app
    returns, however the connection ended (closed by either side, refused, failed,
    cancelled). A connection without a known client address is not counted. Without
    the server's `websocket.http.response` extension the refusal is a close before
    accept (HTTP 403). HTTP requests pass untouched.
    """

    __slots__ = ("app", "counter")

    def __init__(self, app: ASGIApp, max_per_address: int) -> None:
        self.app = app
        self.counter = AddressCounter(max_per_address)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client") if scope["type"] == "websocket" else None
        if not client or client[0] is None:
            await self.app(scope, receive, send)
            return
        address = str(client[0])
        counter = self.counter
        if not counter.acquire(address):
            logger.info(
                "refused WebSocket handshake to %s from %s: %d connections open from that address already",
                scope.get("path"),
                address,
                counter.limit,
            )
            await WebSocketHandler(scope, receive, send).refuse(
                429,
                f"too many connections from your address (at most {counter.limit} at once); "
                "close one and try again",
            )
            return
        try:
            await self.app(scope, receive, send)
        finally:
            # on the native path the connection may outlive the call: release when it ends
            if not defer_until_closed(scope, lambda: counter.release(address)):
                counter.release(address)

"""Testing helpers: drive an app in-process over HTTP and WebSocket (needs `wirehall[testing]`).

`TestClient` is for `async def` tests, `SyncTestClient` for plain `def` tests (it runs the
app on its own event loop, in a thread).
"""

from wirehall.testing.client import LifespanError, TestClient
from wirehall.testing.sync_client import SyncTestClient, SyncWebSocketSession
from wirehall.testing.websocket import HandshakeRejectedError, WebSocketTestSession

__all__ = [
    "HandshakeRejectedError",
    "LifespanError",
    "SyncTestClient",
    "SyncWebSocketSession",
    "TestClient",
    "WebSocketTestSession",
]

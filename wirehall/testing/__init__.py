"""Testing helpers: drive an app in-process over HTTP and WebSocket (needs `wirehall[testing]`)."""

from wirehall.testing.client import LifespanError, TestClient
from wirehall.testing.websocket import HandshakeRejectedError, WebSocketTestSession

__all__ = ["HandshakeRejectedError", "LifespanError", "TestClient", "WebSocketTestSession"]

"""WebSocket connections: the handler, the controller users subclass, and the service."""

from __future__ import annotations

from wirehall.websocket._native import defer_until_closed
from wirehall.websocket._outbox import SlowConsumerPolicy
from wirehall.websocket.codes import CloseCode
from wirehall.websocket.controller import WebSocketController, build_websocket_endpoint
from wirehall.websocket.handler import WebSocketHandler, WebSocketState
from wirehall.websocket.ratelimit import RateLimit
from wirehall.websocket.service import WebSocketService

__all__ = [
    "CloseCode",
    "RateLimit",
    "SlowConsumerPolicy",
    "WebSocketController",
    "WebSocketHandler",
    "WebSocketService",
    "WebSocketState",
    "build_websocket_endpoint",
    "defer_until_closed",
]

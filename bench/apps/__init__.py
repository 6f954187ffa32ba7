"""The benchmarked applications: one module per framework, each serving the same protocol.

HTTP: `GET /` answers `200 text/plain` with `Hello, world!`.

Typed route (`TYPED_APPS`): `POST /items/{id}?limit=N&verbose=B` with a JSON body of a few
fields (`typed_common.Item`), decoded, validated and echoed back as JSON.

WebSocket `/ws`: every connection is in one room. A text frame starting with `e` is echoed
back unchanged; a text frame `b<payload>` is broadcast as `<payload>` to every connection
in the room (the sender included).
"""

from bench.servers import ServedApp

__all__ = ["APPS", "HTTP_ONLY_APPS", "NATIVE_WS", "SLOW_CONSUMER_BUDGET", "TYPED_APPS", "WS_APPS"]

# framework name -> uvicorn import string
APPS = {
    "raw-asgi": "bench.apps.raw_asgi:app",
    "starlette": "bench.apps.starlette_app:app",
    "wirehall": "bench.apps.wirehall_app:app",
}

# HTTP only, to separate what wirehall's default security headers (nosniff, frame options,
# referrer policy) cost from the framework's own path: wirehall without them, and the raw
# app with them
HTTP_ONLY_APPS = {
    "wirehall-bare": "bench.apps.wirehall_bare:app",
    "raw-headers": "bench.apps.raw_headers:app",
}

# the typed route: the raw floor decodes with msgspec directly
TYPED_APPS = {
    "raw-msgspec": "bench.apps.typed_raw:app",
    "wirehall": "bench.apps.typed_wirehall:app",
    "litestar": "bench.apps.typed_litestar:app",
    "fastapi": "bench.apps.typed_fastapi:app",
}

# wirehall's own WebSocket protocol for uvicorn (what `wirehall run` serves with by default)
NATIVE_WS = "wirehall.server.websocket:WebSocketProtocol"

# Bytes a connection may keep waiting before the server closes it, for the servers that
# evict slow consumers (wirehall's `max_pending_bytes`, uWebSockets' `maxBackpressure`):
# small enough that the slow-consumer test's 100 broadcasts of 4 KiB go past it.
SLOW_CONSUMER_BUDGET = 128 * 1024

_WIREHALL_ENV = (
    ("WIREHALL_BACKPLANE", "memory://"),
    ("WIREHALL_BENCH_MAX_PENDING_BYTES", str(SLOW_CONSUMER_BUDGET)),
)

# The WebSocket section: every name a column of its table, in this order. All run under
# uvicorn with uvicorn's default WebSocket protocol (websockets-sansio), except
# wirehall-native (wirehall's protocol) and socketify (uWebSockets, its own server).
WS_APPS = {
    "raw-asgi": ServedApp("bench.apps.raw_asgi:app"),
    "starlette": ServedApp("bench.apps.starlette_app:app"),
    "wirehall-asgi": ServedApp("bench.apps.wirehall_app:app", env=_WIREHALL_ENV),
    "wirehall-native": ServedApp("bench.apps.wirehall_app:app", ws=NATIVE_WS, env=_WIREHALL_ENV),
    "socketify": ServedApp(
        "bench.apps.socketify_app", module=True, args=("--max-backpressure", str(SLOW_CONSUMER_BUDGET))
    ),
}

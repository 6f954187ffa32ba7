"""The benchmarked applications: one module per framework, each serving the same protocol.

HTTP: `GET /` answers `200 text/plain` with `Hello, world!`.

WebSocket `/ws`: every connection is in one room. A text frame starting with `e` is echoed
back unchanged; a text frame `b<payload>` is broadcast as `<payload>` to every connection
in the room (the sender included).
"""

__all__ = ["APPS", "HTTP_ONLY_APPS"]

# framework name -> uvicorn import string
APPS = {
    "raw-asgi": "bench.apps.raw_asgi:app",
    "starlette": "bench.apps.starlette_app:app",
    "wirehall": "bench.apps.wirehall_app:app",
}

# HTTP only: wirehall without its default security headers (nosniff, frame options, referrer
# policy), to separate what they cost from the framework's own path
HTTP_ONLY_APPS = {"wirehall-bare": "bench.apps.wirehall_bare:app"}

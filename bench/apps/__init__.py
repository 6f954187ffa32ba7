"""The benchmarked applications: one module per framework, each serving the same protocol.

HTTP: `GET /` answers `200 text/plain` with `Hello, world!`.

Typed route (`TYPED_APPS`): `POST /items/{id}?limit=N&verbose=B` with a JSON body of a few
fields (`typed_common.Item`), decoded, validated and echoed back as JSON.

WebSocket `/ws`: every connection is in one room. A text frame starting with `e` is echoed
back unchanged; a text frame `b<payload>` is broadcast as `<payload>` to every connection
in the room (the sender included).
"""

__all__ = ["APPS", "HTTP_ONLY_APPS", "TYPED_APPS"]

# framework name -> uvicorn import string
APPS = {
    "raw-asgi": "bench.apps.raw_asgi:app",
    "starlette": "bench.apps.starlette_app:app",
    "wirehall": "bench.apps.wirehall_app:app",
}

# HTTP only: wirehall without its default security headers (nosniff, frame options, referrer
# policy), to separate what they cost from the framework's own path
HTTP_ONLY_APPS = {"wirehall-bare": "bench.apps.wirehall_bare:app"}

# the typed route: the raw floor decodes with msgspec directly
TYPED_APPS = {
    "raw-msgspec": "bench.apps.typed_raw:app",
    "wirehall": "bench.apps.typed_wirehall:app",
    "litestar": "bench.apps.typed_litestar:app",
    "fastapi": "bench.apps.typed_fastapi:app",
}

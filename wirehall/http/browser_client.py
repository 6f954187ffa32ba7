"""`wirehall.js`, the browser client, served by the app: `app.serve_client()`.

The script ships in the package (`wirehall/static/wirehall.js`) and is served as it is, an
ES module with no dependencies. It is revalidated on each use (`Cache-Control: no-cache`
with a strong ETag), so a page gets a 304 while the installed version stays the same and
the new script as soon as wirehall is upgraded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from importlib import resources

from wirehall.http.request import Request
from wirehall.http.response import Response

__all__ = ["CLIENT_PATH", "client_endpoint", "client_script"]

CLIENT_PATH = "/wirehall.js"
_MEDIA_TYPE = "text/javascript; charset=utf-8"


def client_script() -> bytes:
    """The source of `wirehall.js` as shipped with this version of wirehall."""
    return resources.files("wirehall").joinpath("static", "wirehall.js").read_bytes()


def client_endpoint() -> Callable[[Request], Awaitable[Response]]:
    """An endpoint answering GET with `wirehall.js`, or 304 when the client's copy is current."""
    body = client_script()
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {"cache-control": "no-cache", "etag": etag}

    async def wirehall_js(request: Request) -> Response:
        tags = request.headers.get("if-none-match")
        if tags is not None and (tags.strip() == "*" or etag in (tag.strip() for tag in tags.split(","))):
            return Response(b"", status=304, headers=headers)
        return Response(body, media_type=_MEDIA_TYPE, headers=headers)

    return wirehall_js

"""Serving a directory of static files, refusing anything outside it."""

from __future__ import annotations

import asyncio
import os
import stat

from wirehall.errors import ConfigurationError
from wirehall.http.response import FileResponse, error_response
from wirehall.types import Receive, Scope, Send

__all__ = ["StaticFiles"]


class StaticFiles:
    """An ASGI app serving files below `directory` (mount it: `app.static("/static", "dir")`).

    Paths that leave the directory (`..`, absolute paths, symlinks pointing out) get 404.
    With `html=True`, `dir/` serves `dir/index.html`.
    """

    def __init__(self, directory: str | os.PathLike[str], *, html: bool = False) -> None:
        self.directory = os.path.realpath(os.fspath(directory))
        if not os.path.isdir(self.directory):
            raise ConfigurationError(
                f"static directory {os.fspath(directory)!r} does not exist or is not a directory"
            )
        self.html = html

    def resolve(self, path: str) -> str | None:
        """The file for a URL path, or None when it is outside the directory or missing."""
        if "\x00" in path:
            return None
        parts = [part for part in path.split("/") if part not in ("", ".")]
        if any(part == ".." or "\\" in part for part in parts):
            return None
        candidate = os.path.realpath(os.path.join(self.directory, *parts))
        if os.path.commonpath([candidate, self.directory]) != self.directory:
            return None
        return candidate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1000})
            return
        if scope["method"] not in ("GET", "HEAD"):
            await error_response(405, headers={"Allow": "GET, HEAD"})(scope, receive, send)
            return
        path = self.resolve(scope["path"])
        info = None
        if path is not None:
            try:
                info = await asyncio.to_thread(os.stat, path)
                if stat.S_ISDIR(info.st_mode) and self.html:
                    path = os.path.join(path, "index.html")
                    info = await asyncio.to_thread(os.stat, path)
            except (OSError, ValueError):
                info = None
        if path is None or info is None or not stat.S_ISREG(info.st_mode):
            await error_response(404, "file not found")(scope, receive, send)
            return
        await FileResponse(path, stat_result=info)(scope, receive, send)

"""The HTTP side: requests, responses, controllers, templates and static files."""

from wirehall.http.controller import HTTPController
from wirehall.http.forms import FormData, UploadFile
from wirehall.http.request import Request
from wirehall.http.response import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from wirehall.http.staticfiles import StaticFiles
from wirehall.http.templates import Templates

__all__ = [
    "FileResponse",
    "FormData",
    "HTMLResponse",
    "HTTPController",
    "JSONResponse",
    "PlainTextResponse",
    "RedirectResponse",
    "Request",
    "Response",
    "StaticFiles",
    "StreamingResponse",
    "Templates",
    "UploadFile",
]

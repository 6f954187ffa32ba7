"""The app the browser tests serve with uvicorn: default security settings, sessions and CSRF."""

from __future__ import annotations

from wirehall.app import Middleware, Wirehall
from wirehall.http.request import Request
from wirehall.http.response import Response
from wirehall.security import CSRFMiddleware, SessionMiddleware
from wirehall.websocket.controller import WebSocketController

app = Wirehall(
    middleware=[
        Middleware(SessionMiddleware, secret_key="browser-test-key"),
        Middleware(CSRFMiddleware),
    ]
)

APP_JS = """
const status = document.getElementById("status");
const ws = new WebSocket(`ws://${location.host}/ws`);
ws.onmessage = (event) => { status.textContent = event.data; };
ws.onclose = (event) => { if (status.textContent === "") status.textContent = `closed:${event.code}`; };
"""


def html(body: str, headers: dict[str, str] | None = None) -> Response:
    return Response(body.encode(), headers={"content-type": "text/html; charset=utf-8", **(headers or {})})


@app.get("/")
async def index(request: Request) -> Response:
    token = request.scope["csrf_token"]
    return html(
        f"""<!doctype html><title>t</title>
<div id="status"></div><div id="inline"></div>
<script>document.getElementById("inline").textContent = "ran";</script>
<form method="post" action="/submit">
  <input type="hidden" name="csrf_token" value="{token}">
  <input name="text" value="hello"><button id="send">send</button>
</form>
<form method="post" action="/submit" id="tokenless">
  <input name="text" value="no token"><button id="send-tokenless">send</button>
</form>
<script src="/app.js"></script>"""
    )


@app.get("/app.js")
async def script() -> Response:
    return Response(APP_JS.encode(), headers={"content-type": "text/javascript"})


@app.get("/evil")
async def evil(request: Request) -> Response:
    target = request.query["target"]
    return html(
        f"""<!doctype html><title>evil</title><div id="status"></div>
<script>
const status = document.getElementById("status");
const ws = new WebSocket("ws://{target}/ws");
ws.onmessage = (event) => {{ status.textContent = event.data; }};
ws.onclose = (event) => {{ if (status.textContent === "") status.textContent = "closed:" + event.code; }};
</script>""",
        headers={"content-security-policy": "default-src * 'unsafe-inline'"},
    )


@app.post("/submit")
async def submit(request: Request) -> Response:
    form = await request.form()
    return html(f"<p id='result'>got {form.get('text')}</p>")


@app.websocket("/ws")
class Socket(WebSocketController):
    async def on_connect(self) -> None:
        await self.accept()
        await self.send_text("open")

"""`refuse(..., readable=True)`: accept, then close with 4000 + the status and the reason."""

from __future__ import annotations

from urllib.parse import parse_qs

import pytest

from wirehall.app import Wirehall
from wirehall.testing.client import TestClient
from wirehall.testing.websocket import HandshakeRejectedError
from wirehall.websocket import WebSocketController
from wirehall.websocket.codes import refusal_close_code

pytestmark = pytest.mark.usefixtures("websocket_path")  # every test here runs on both WebSocket paths


class Gate(WebSocketController):
    closed_with: int | None = None

    async def on_connect(self) -> None:
        user = parse_qs(self.scope.get("query_string", b"").decode()).get("user", [""])[0]
        if user == "mallory":
            await self.refuse(403, "that name is not allowed", readable=True)
        elif user == "":
            await self.refuse(403, "a name is needed")  # the default: an HTTP refusal
        else:
            await self.accept()

    async def on_disconnect(self, code: int) -> None:
        type(self).closed_with = code


def make_app() -> Wirehall:
    app = Wirehall(docs_url=None, openapi_url=None, asyncapi_url=None)
    app.add_websocket_route("/gate", Gate)
    return app


async def test_a_readable_refusal_closes_with_4000_plus_the_status_and_the_reason() -> None:
    Gate.closed_with = None
    async with TestClient(make_app()) as client, client.websocket_connect("/gate?user=mallory") as ws:
        assert await ws.receive_close() == 4403
        assert ws.close_reason == "that name is not allowed"
    assert Gate.closed_with == 4403


async def test_the_default_refusal_stays_an_http_status() -> None:
    async with TestClient(make_app()) as client:
        with pytest.raises(HandshakeRejectedError) as info:
            async with client.websocket_connect("/gate"):
                pass
        assert info.value.status == 403


async def test_an_accepted_connection_is_untouched() -> None:
    async with TestClient(make_app()) as client, client.websocket_connect("/gate?user=ann") as ws:
        await ws.close()


@pytest.mark.parametrize(("status", "code"), [(400, 4400), (403, 4403), (429, 4429), (503, 4503)])
def test_refusal_close_code(status: int, code: int) -> None:
    assert refusal_close_code(status) == code


@pytest.mark.parametrize("status", [200, 399, 600, 1000])
def test_refusal_close_code_needs_an_error_status(status: int) -> None:
    with pytest.raises(ValueError, match="400-599"):
        refusal_close_code(status)

"""`app.serve_client()`: wirehall.js at a fixed path, revalidated by its ETag."""

from __future__ import annotations

from wirehall.app import Wirehall
from wirehall.http.browser_client import client_script
from wirehall.testing.client import TestClient


async def test_serve_client_serves_the_module_with_an_etag_and_304() -> None:
    app = Wirehall()
    app.serve_client()
    async with TestClient(app) as client:
        response = await client.get("/wirehall.js")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/javascript")
        assert response.headers["cache-control"] == "no-cache"
        assert response.content == client_script()
        assert b"export class WirehallSocket" in response.content
        etag = response.headers["etag"]
        again = await client.get("/wirehall.js", headers={"if-none-match": etag})
        assert again.status_code == 304
        assert again.content == b""
        assert again.headers["etag"] == etag
        stale = await client.get("/wirehall.js", headers={"if-none-match": '"other"'})
        assert stale.status_code == 200


async def test_serve_client_takes_another_path_and_is_off_by_default() -> None:
    app = Wirehall()
    app.serve_client("/assets/wirehall.js")
    async with TestClient(app) as client:
        assert (await client.get("/assets/wirehall.js")).status_code == 200
        assert (await client.get("/wirehall.js")).status_code == 404
    assert app.url_path_for("wirehall_js") == "/assets/wirehall.js"


async def test_the_client_script_is_not_in_the_openapi_document() -> None:
    app = Wirehall()
    app.serve_client()
    async with TestClient(app) as client:
        document = (await client.get("/openapi.json")).json()
    assert "/wirehall.js" not in document["paths"]

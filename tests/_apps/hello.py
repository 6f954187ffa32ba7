"""A small app for `wirehall run` / `wirehall routes` tests."""

from __future__ import annotations

from wirehall import HTTPController, Wirehall

app = Wirehall(backplane="memory://")
api = app.group("/api")
not_an_app = "just a string"


@app.get("/healthz")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@api.route("/items/{id:int}", name="item")
class Items(HTTPController):
    async def get(self, id: int) -> dict[str, int]:
        return {"id": id}

    async def delete(self, id: int) -> None:
        return None


async def plain_asgi(scope: object, receive: object, send: object) -> None:
    """Callable, but not a wirehall app."""

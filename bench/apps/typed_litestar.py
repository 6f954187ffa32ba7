"""The typed route on Litestar (msgspec underneath)."""

from __future__ import annotations

from typing import Annotated

from litestar import Litestar, get, post
from litestar.params import Parameter

from bench.apps.typed_common import Echo, Item

__all__ = ["app"]


@post("/items/{item_id:int}", status_code=200)
async def create(
    item_id: int, data: Item, limit: Annotated[int, Parameter(ge=1, le=500)] = 10, verbose: bool = False
) -> Echo:
    return Echo(item_id, limit, verbose, data)


@get("/", media_type="text/plain")
async def hello() -> str:  # the benchmark's readiness probe
    return "Hello, world!"


app = Litestar([create, hello], openapi_config=None)

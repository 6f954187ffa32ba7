"""The typed route on wirehall: path, query and body bound from the signature."""

from __future__ import annotations

from typing import Annotated

import msgspec

from bench.apps.typed_common import Echo, Item
from wirehall import Wirehall

__all__ = ["app"]

app = Wirehall()


@app.get("/")
async def hello() -> str:  # the benchmark's readiness probe
    return "Hello, world!"


@app.post("/items/{item_id:int}")
async def create(
    item_id: int, item: Item, limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 10, verbose: bool = False
) -> Echo:
    return Echo(item_id, limit, verbose, item)

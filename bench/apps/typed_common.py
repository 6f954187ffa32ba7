"""The typed route's body and answer (msgspec), shared by the wirehall, Litestar and raw apps."""

from __future__ import annotations

from typing import Annotated

import msgspec

__all__ = ["BODY", "PATH", "Echo", "Item"]

PATH = "/items/42?limit=10&verbose=true"
BODY = '{"name": "pen", "price": 1.5, "quantity": 3, "tags": ["office", "blue"]}'


class Item(msgspec.Struct):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    price: Annotated[float, msgspec.Meta(ge=0)]
    quantity: Annotated[int, msgspec.Meta(ge=1)]
    tags: list[str] = []


class Echo(msgspec.Struct):
    id: int
    limit: int
    verbose: bool
    item: Item

"""The typed route on FastAPI (Pydantic models)."""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, Query
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field

__all__ = ["app"]


class Item(BaseModel):
    name: Annotated[str, Field(min_length=1, max_length=100)]
    price: Annotated[float, Field(ge=0)]
    quantity: Annotated[int, Field(ge=1)]
    tags: list[str] = []


class Echo(BaseModel):
    id: int
    limit: int
    verbose: bool
    item: Item


app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)


@app.get("/", response_class=PlainTextResponse)
async def hello() -> str:  # the benchmark's readiness probe
    return "Hello, world!"


@app.post("/items/{item_id}")
async def create(
    item_id: int, item: Item, limit: Annotated[int, Query(ge=1, le=500)] = 10, verbose: bool = False
) -> Echo:
    return Echo(id=item_id, limit=limit, verbose=verbose, item=item)

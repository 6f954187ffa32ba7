"""A small app for the `wirehall run --metrics --workers 2` test: it says which process answered."""

from __future__ import annotations

import os

from wirehall import Wirehall

app = Wirehall(backplane="memory://")


@app.get("/pid")
async def pid() -> dict[str, int]:
    return {"pid": os.getpid()}

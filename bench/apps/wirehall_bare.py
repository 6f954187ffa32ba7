"""wirehall's HTTP hello world with the default security headers turned off.

Benchmarked beside the default app (HTTP only) to show what the three extra response
headers cost (most of it is the server writing them), apart from routing, DI and events.
"""

from __future__ import annotations

from wirehall import Wirehall

__all__ = ["app"]

app = Wirehall(security_headers=False)


@app.get("/")
async def hello() -> str:
    return "Hello, world!"

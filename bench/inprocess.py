"""HTTP requests through uvicorn's own httptools protocol in process: no sockets, no kernel.

    python -m bench.inprocess [--typed] [--requests N] [--instructions] APP [APP ...]

APP is a module of `bench/apps` (`raw_asgi`, `raw_headers`, `wirehall_app`, `wirehall_bare`;
with `--typed`, `typed_raw` and `typed_wirehall`). Each request's bytes are fed to one
`HttpToolsProtocol` (the class `uvicorn --http httptools` serves with) over a transport that
only counts writes; the loop runs until the app has answered. Prints microseconds per request
(best of 5), or with `--instructions` the instructions per request counted by
`valgrind --tool=callgrind`: the difference between a run of N and one of N/5 requests, so
start-up is left out. Instruction counts hardly move with other load on the machine; what
the kernel and the network cost every server alike is not in them, so their ratios are lower
than the ones `wrk` measures (`docs/http-hot-path.md`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
from typing import Any

from bench.apps.typed_common import BODY, PATH

__all__ = ["main", "per_request_instructions", "per_request_seconds"]

_HELLO = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: bench\r\n\r\n"
_TYPED = (
    f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: bench\r\n"
    f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n{BODY}"
).encode()
_WARM_UP = 200


class _Transport:
    """What the protocol needs of an asyncio transport; writes are counted, not sent."""

    def __init__(self) -> None:
        self.writes = 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def write(self, data: bytes) -> None:
        self.writes += 1

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        raise RuntimeError("the app closed the connection: it did not answer as expected")

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass


async def _serve(target: str, request: bytes, count: int) -> float:
    """Feed `request` `count` times (after a warm-up); seconds per request."""
    from uvicorn.config import Config
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from uvicorn.server import ServerState

    config = Config(
        target, http="httptools", loop="none", lifespan="off", access_log=False, log_level="warning"
    )
    config.load()
    state = ServerState()
    protocol = HttpToolsProtocol(config, state, {}, asyncio.get_running_loop())
    transport = _Transport()
    protocol.connection_made(transport)  # type: ignore[arg-type]

    async def run(n: int) -> None:
        for _ in range(n):
            protocol.data_received(request)
            while state.tasks:  # noqa: ASYNC110 - the request's task, done once the app has answered
                await asyncio.sleep(0)

    await run(_WARM_UP)
    writes = transport.writes
    started = time.perf_counter()
    await run(count)
    elapsed = time.perf_counter() - started
    if transport.writes - writes < count:
        raise RuntimeError(f"{target} answered {transport.writes - writes} of {count} requests")
    return elapsed / count


def _run(target: str, request: bytes, count: int) -> float:
    import uvloop

    return uvloop.run(_serve(target, request, count))


def per_request_seconds(app: str, *, typed: bool = False, count: int = 20_000, repeat: int = 5) -> float:
    """Best of `repeat` runs of `count` requests to `bench.apps.<app>`, in seconds per request."""
    request = _TYPED if typed else _HELLO
    return min(_run(f"bench.apps.{app}:app", request, count) for _ in range(repeat))


def per_request_instructions(app: str, *, typed: bool = False, count: int = 2_500) -> float:
    """Instructions per request to `bench.apps.<app>` under callgrind (needs valgrind)."""
    if shutil.which("valgrind") is None:
        raise RuntimeError("valgrind is not installed")

    def collected(n: int) -> int:
        command = [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-m",
            "bench.inprocess",
            "--requests",
            str(n),
            "--once",
            *(["--typed"] if typed else []),
            app,
        ]
        # one hash seed for every run: dict and set layouts, and so their costs, stay the same
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=1800, env=env)
        match = re.search(r"Collected : (\d+)", done.stderr)
        if match is None:
            raise RuntimeError(f"no instruction count in callgrind's output:\n{done.stderr[-2000:]}")
        return int(match.group(1))

    small = max(1, count // 5)
    return (collected(count) - collected(small)) / (count - small)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.inprocess", description=__doc__.split("\n\n")[0])
    parser.add_argument("apps", nargs="+", metavar="APP", help="modules of bench/apps")
    parser.add_argument("--typed", action="store_true", help="the typed route instead of hello world")
    parser.add_argument("--requests", type=int, help="requests per run (20,000; 2,500 with --instructions)")
    parser.add_argument("--instructions", action="store_true", help="count instructions with callgrind")
    parser.add_argument("--once", action="store_true", help=argparse.SUPPRESS)  # one run, no output
    args = parser.parse_args(argv)
    if args.once:
        for app in args.apps:
            _run(f"bench.apps.{app}:app", _TYPED if args.typed else _HELLO, args.requests)
        return
    first: float | None = None
    for app in args.apps:
        if args.instructions:
            value = per_request_instructions(app, typed=args.typed, count=args.requests or 2_500)
            text = f"{value / 1000:8.1f}k instructions/request"
        else:
            value = per_request_seconds(app, typed=args.typed, count=args.requests or 20_000)
            text = f"{value * 1e6:8.2f} us/request"
        first = first or value
        sys.stdout.write(f"{app:16} {text}  {first / value:.2f}x the first\n")


if __name__ == "__main__":
    main()

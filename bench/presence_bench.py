"""Presence at scale: a crowd joining one chat room, and what it costs the server.

One `wirehall run examples.chat:app` process (a temporary SQLite database, the memory
backplane) and a crowd of `count` raw WebSocket clients (`bench.ws_connection`, cheap per
frame) that join one room at `rate` joins a second, with 32-character names (the longest
the chat allows, so presence lists are as large as they get). Measured:

- the server's CPU time (user + system, from /proc) from the first join until every client
  has a presence list naming everybody, and again for everybody leaving;
- what the clients received (payload bytes and presence frames), and the shortest gap
  between two presence frames on one connection (the chat promises at most 4 a second);
- each join's latency, from the TCP connect to its welcome frame.

`crowd()` is the client alone; `tests/hostile/test_presence_scale.py` uses it too.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.procfs import cpu_seconds
from bench.servers import Placement, serve_wirehall
from bench.ws_connection import Connection, close_all, connect

__all__ = ["Crowd", "PresenceSettings", "crowd", "run_presence"]

Progress = Callable[[str], None]

_PRESENCE = b'{"type":"presence"'
_WELCOME = b'{"type":"welcome"'


@dataclass(frozen=True)
class PresenceSettings:
    counts: tuple[int, ...] = (300, 1000)  # crowd sizes, one run each
    rate: float = 400.0  # joins started a second
    settle_timeout: float = 60.0  # for every client to see everybody (and for the leaves)


@dataclass
class _Member:
    conn: Connection
    started: float
    welcomed: float | None = None
    payload_bytes: int = 0
    presence_frames: int = 0
    users: int = 0  # in the last presence list
    last_presence_at: float = 0.0
    min_gap: float = math.inf


@dataclass
class Crowd:
    """What a crowd of clients measured; `close()` it when done."""

    members: list[_Member] = field(default_factory=list)
    join_seconds: float = 0.0

    @property
    def welcome_ms(self) -> list[float]:
        return [(m.welcomed - m.started) * 1000 for m in self.members if m.welcomed is not None]

    @property
    def payload_bytes(self) -> int:
        return sum(m.payload_bytes for m in self.members)

    @property
    def presence_frames(self) -> int:
        return sum(m.presence_frames for m in self.members)

    @property
    def min_presence_gap(self) -> float:
        return min((m.min_gap for m in self.members), default=math.inf)

    def settled(self, users: int) -> bool:
        """Whether every client's last presence list names `users` people."""
        return all(m.users == users for m in self.members)

    async def wait_settled(self, users: int, timeout: float) -> float:
        """Seconds until `settled(users)`; TimeoutError after `timeout`."""
        start = time.perf_counter()
        async with asyncio.timeout(timeout):
            while not self.settled(users):  # noqa: ASYNC110  # a condition over many connections
                await asyncio.sleep(0.05)
        return time.perf_counter() - start

    async def close(self) -> None:
        await close_all([m.conn for m in self.members])


def _watch(member: _Member) -> Callable[[Connection, bytes], None]:
    def on_data(conn: Connection, payload: bytes) -> None:
        now = time.perf_counter()
        member.payload_bytes += len(payload)
        if payload.startswith(_PRESENCE):
            if member.presence_frames:
                member.min_gap = min(member.min_gap, now - member.last_presence_at)
            member.presence_frames += 1
            member.users = payload.count(b'"member-')  # every name starts so (`user_name`)
            member.last_presence_at = now
        elif member.welcomed is None and payload.startswith(_WELCOME):
            member.welcomed = now

    return on_data


def user_name(index: int) -> str:
    """A 32-character name (the chat's longest), distinct for each index."""
    return f"member-{index:06d}-".ljust(32, "x")


async def crowd(port: int, room: str, count: int, rate: float, host: str = "127.0.0.1") -> Crowd:
    """Open `count` connections to `/ws/{room}`, `rate` a second, each with its own name.

    Returns once every connection is open; their frames keep being counted.
    """
    result = Crowd()
    loop = asyncio.get_running_loop()
    begin = time.perf_counter()

    async def one(index: int) -> None:
        await asyncio.sleep(max(0.0, begin + index / rate - time.perf_counter()))
        started = time.perf_counter()
        conn = await connect(host, port, f"/ws/{room}?user={user_name(index)}", timeout=15.0)
        member = _Member(conn, started)
        conn.on_data = _watch(member)
        result.members.append(member)

    tasks = [loop.create_task(one(index)) for index in range(count)]
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    result.join_seconds = time.perf_counter() - begin
    failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    if failures:
        await result.close()
        raise RuntimeError(f"{len(failures)} of {count} joins failed; first: {failures[0]!r}")
    return result


def _percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]


async def _measure(pid: int, port: int, count: int, s: PresenceSettings) -> dict[str, Any]:
    room = f"crowd{count}"
    cpu_before = cpu_seconds(pid)
    people = await crowd(port, room, count, s.rate)
    try:
        settle = await people.wait_settled(count, s.settle_timeout)
        join_cpu = cpu_seconds(pid) - cpu_before
        welcome = people.welcome_ms
        joined = {
            "server_cpu_s": round(join_cpu, 3),
            "join_seconds": round(people.join_seconds, 2),
            "settle_seconds": round(settle, 2),
            "payload_mb": round(people.payload_bytes / 1e6, 2),
            "presence_frames": people.presence_frames,
            "min_presence_gap_ms": round(people.min_presence_gap * 1000, 1),
            "welcome_p50_ms": round(statistics.median(welcome), 2),
            "welcome_p99_ms": round(_percentile(welcome, 0.99) or 0.0, 2),
        }
    finally:
        cpu_before = cpu_seconds(pid)
        await people.close()
    # the leaves: everyone closes at once; wait for the server to have done its work
    deadline = time.perf_counter() + s.settle_timeout
    previous = -1.0
    while time.perf_counter() < deadline:
        await asyncio.sleep(0.5)
        now = cpu_seconds(pid)
        if now == previous:
            break
        previous = now
    joined["leave_server_cpu_s"] = round(previous - cpu_before, 3)
    return joined


def run_presence(where: Placement, log_dir: Path, s: PresenceSettings, progress: Progress) -> dict[str, Any]:
    """Each crowd size once, against one chat process of its own."""
    runs: dict[str, Any] = {}
    for count in s.counts:
        with tempfile.TemporaryDirectory(prefix="wirehall-presence-bench-") as folder:
            env = {
                "CHAT_DATABASE_URL": f"sqlite+aiosqlite:///{folder}/chat.db",
                "WIREHALL_BACKPLANE": "memory://",
            }
            with serve_wirehall("chat-presence", "examples.chat:app", where, log_dir, env) as server:
                result = asyncio.run(_measure(server.process.pid, server.port, count, s))
        runs[str(count)] = result
        progress(
            f"  {count} joins: server CPU {result['server_cpu_s']:.2f} s, clients got "
            f"{result['payload_mb']:.1f} MB in {result['presence_frames']} presence frames, "
            f"welcome p99 {result['welcome_p99_ms']:.1f} ms; leaves {result['leave_server_cpu_s']:.2f} s CPU"
        )
    return {"settings": asdict(s), "runs": runs}

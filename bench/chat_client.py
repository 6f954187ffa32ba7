"""The chat's load client. It runs in a process of its own:

    python -m bench.chat_client '<spec as JSON>'

and prints one JSON document (the measurements) on stdout; progress goes to stderr.

Posts go over raw HTTP/1.1 keep-alive connections (a request is one write, a response is
a head and a Content-Length body), and the room's watchers are `bench.ws_connection`
WebSockets, both on uvloop, so that the client costs little next to the servers.

Each run:
- "posting": `posters` connections post as fast as the servers answer, spread over the
  servers, to the run's rooms (one, or many), for `warm + seconds`; msgs/s counts the
  201s that completed in the last `seconds`.
- "joins": posters paced at `post_rate` msgs/s over the rooms while `joins` WebSockets open,
  `join_rate` a second, each timed from the TCP connect to its welcome frame.
In both, `watchers` WebSockets per room stay connected throughout; at the end each must
have received every message of its room that was acknowledged with a 201, once, in
increasing id order (and nothing else).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from bench.procfs import cpu_seconds, raise_fd_limit
from bench.ws_connection import Connection, close_all

__all__ = ["main", "run"]

_perf = time.perf_counter
_MIB = 1 << 20


def _log(message: str) -> None:
    print(f"[chat_client] {message}", file=sys.stderr, flush=True)


def _percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]


def _ms(values: list[float]) -> dict[str, float | None]:
    return {
        "median_ms": statistics.median(values) if values else None,
        "p99_ms": _percentile(values, 0.99),
        "max_ms": max(values) if values else None,
    }


# the frames the client reads ----------------------------------------------------------------


class _Stored(msgspec.Struct):
    id: int


class _Frame(msgspec.Struct):
    type: str
    id: int = 0
    history: list[_Stored] = []


_decode_frame = msgspec.json.Decoder(_Frame).decode
_decode_stored = msgspec.json.Decoder(_Stored).decode


# the machine's load -------------------------------------------------------------------------


_SERVICES = {"postgres": "postgres_cpu", "redis-server": "redis_cpu"}


def _cpu_with_children(pid: int) -> float:
    # utime + stime + cutime + cstime: a PostgreSQL backend that ended is counted in its parent
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
        text = stat.read()
    fields = text[text.rindex(")") + 2 :].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _service_cpu() -> dict[str, float]:
    """CPU seconds used so far by every PostgreSQL and Redis process (whoever they serve),
    their ended children included."""
    used = dict.fromkeys(_SERVICES.values(), 0.0)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/comm", encoding="ascii", errors="replace") as comm:
                name = comm.read().strip()
            if name in _SERVICES:
                used[_SERVICES[name]] += _cpu_with_children(int(entry.name))
        except (OSError, ValueError):
            continue  # the process ended meanwhile
    return used


@dataclass(frozen=True)
class _Usage:
    at: float
    servers_cpu: float
    client_cpu: float
    services_cpu: dict[str, float]
    machine_busy: float  # CPU seconds all CPUs spent busy, from /proc/stat
    machine_total: float

    @classmethod
    def now(cls, server_pids: list[int]) -> _Usage:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        ticks = os.sysconf("SC_CLK_TCK")
        return cls(
            at=_perf(),
            servers_cpu=sum(cpu_seconds(pid) for pid in server_pids),
            client_cpu=cpu_seconds(os.getpid()),
            services_cpu=_service_cpu(),
            machine_busy=(sum(fields[:8]) - idle) / ticks,
            machine_total=sum(fields[:8]) / ticks,
        )

    def since(self, before: _Usage, messages: int) -> dict[str, Any]:
        elapsed = self.at - before.at
        busy = self.machine_busy - before.machine_busy
        total = self.machine_total - before.machine_total
        servers = self.servers_cpu - before.servers_cpu
        client = self.client_cpu - before.client_cpu
        return {
            "servers_cpu_us_per_message": servers / messages * 1e6 if messages else None,
            "servers_cpu_share": servers / elapsed,  # of one CPU, both processes together
            "client_cpu_share": client / elapsed,
            "machine_busy_share": busy / total if total else None,  # of all CPUs
            # what everything else on the machine (PostgreSQL, Redis, other users) used, in CPUs
            "others_cpus": (busy - servers - client) / elapsed,
            "load_average": os.getloadavg()[0],
            # all of the machine's PostgreSQL / Redis processes, other users' included
            **{
                f"{name}_us_per_message": (used - before.services_cpu[name]) / messages * 1e6
                if messages
                else None
                for name, used in self.services_cpu.items()
            },
        }


# HTTP posts ---------------------------------------------------------------------------------


class Poster:
    """One keep-alive HTTP/1.1 connection that posts chat messages."""

    def __init__(self, host: str, port: int, user: str) -> None:
        self.host = host
        self.port = port
        self.user = user
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.sent = 0

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=_MIB)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def post(self, room: str) -> tuple[int, bytes]:
        """Post the next message to `room`; the status and the body of the answer."""
        if self.writer is None:
            await self.open()
        assert self.reader is not None
        assert self.writer is not None
        self.sent += 1
        body = b'{"user":"%s","text":"message %d from %s"}' % (
            self.user.encode(),
            self.sent,
            self.user.encode(),
        )
        self.writer.write(
            b"POST /api/rooms/%s/messages HTTP/1.1\r\nHost: %s:%d\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (room.encode(), self.host.encode(), self.port, len(body), body)
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        keep_alive = True
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                keep_alive = False
            elif name == b"transfer-encoding":
                raise RuntimeError(
                    f"answer with Transfer-Encoding {value.strip()!r}; expected Content-Length"
                )
        answer = await self.reader.readexactly(length)
        if not keep_alive:
            self.close()
        return status, answer


@dataclass
class _Posted:
    """What the posters got back: per room, the ids acknowledged with a 201."""

    ids: dict[str, list[int]]
    counted: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    async def one(self, poster: Poster, room: str, window: tuple[float, float]) -> None:
        started = _perf()
        try:
            status, body = await poster.post(room)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            self.errors[type(exc).__name__] += 1
            poster.close()
            return
        done = _perf()
        if status != 201:
            self.errors[f"HTTP {status}"] += 1
            if len(self.errors) == 1 and self.errors[f"HTTP {status}"] == 1:
                _log(f"first refused post: {status} {body[:200]!r}")
            return
        self.ids[room].append(_decode_stored(body).id)
        if window[0] <= done <= window[1]:
            self.counted += 1
            self.latencies_ms.append((done - started) * 1000)


# WebSockets ---------------------------------------------------------------------------------


class Watcher:
    """A WebSocket in one room that keeps every message id it receives."""

    def __init__(self, room: str) -> None:
        self.room = room
        self.ids: list[int] = []
        self.welcomed = asyncio.get_running_loop().create_future()
        self.conn: Connection | None = None
        self.bad_frames = 0
        self._wanted = 0
        self._reached = asyncio.Event()

    async def wait_for(self, count: int) -> None:
        """Until this watcher has received `count` message ids (history included)."""
        self._wanted = count
        if len(self.ids) >= count:
            self._reached.set()
        await self._reached.wait()

    def on_data(self, conn: Connection, payload: bytes) -> None:
        try:
            frame = _decode_frame(payload)
        except msgspec.DecodeError:
            self.bad_frames += 1
            return
        if frame.type == "message":
            self.ids.append(frame.id)
            if self._wanted and len(self.ids) >= self._wanted:
                self._reached.set()
        elif frame.type == "welcome":
            self.ids.extend(m.id for m in frame.history)
            if not self.welcomed.done():
                self.welcomed.set_result(_perf())
        elif frame.type == "error":
            self.bad_frames += 1

    def check(self, expected: list[int]) -> dict[str, int]:
        """How far what this watcher got is from `expected` (sorted ids): all zero when equal."""
        got = set(self.ids)
        return {
            "missing": len(set(expected) - got),
            "unexpected": len(got - set(expected)),
            "duplicates": len(self.ids) - len(got),
            "out_of_order": sum(1 for a, b in zip(self.ids, self.ids[1:], strict=False) if b <= a),
        }


async def open_socket(
    host: str, port: int, path: str, on_data: Callable[[Connection, bytes], None], timeout: float
) -> Connection:
    """A WebSocket whose `on_data` is set before any frame can arrive (the welcome may come
    in the same read as the handshake's answer)."""
    loop = asyncio.get_running_loop()

    def factory() -> Connection:
        conn = Connection(host, port, path)
        conn.on_data = on_data
        return conn

    _, conn = await asyncio.wait_for(loop.create_connection(factory, host, port), timeout)
    try:
        await asyncio.wait_for(conn.handshake, timeout)
    except BaseException:
        if conn.transport is not None:
            conn.transport.abort()
        raise
    return conn


async def open_watchers(
    host: str, ports: list[int], rooms: list[str], per_room: int, timeout: float = 30.0
) -> list[Watcher]:
    """`per_room` watchers in each room, alternating between the servers; welcomed when this returns."""
    watchers = [Watcher(room) for room in rooms for _ in range(per_room)]
    gate = asyncio.Semaphore(50)

    async def one(index: int, watcher: Watcher) -> None:
        async with gate:
            path = f"/ws/{watcher.room}?user=watcher{index}"
            watcher.conn = await open_socket(host, ports[index % len(ports)], path, watcher.on_data, timeout)
            await asyncio.wait_for(watcher.welcomed, timeout)

    await asyncio.gather(*(one(i, w) for i, w in enumerate(watchers)))
    return watchers


async def settle_watchers(
    watchers: list[Watcher], posted: dict[str, list[int]], timeout: float
) -> dict[str, Any]:
    """Wait (up to `timeout`) until every watcher has its room's count; then compare."""
    expected = {room: sorted(ids) for room, ids in posted.items()}
    started = _perf()
    waits = [asyncio.ensure_future(w.wait_for(len(expected[w.room]))) for w in watchers]
    _, pending = await asyncio.wait(waits, timeout=timeout)
    for waiting in pending:
        waiting.cancel()
    waited = _perf() - started
    totals: Counter[str] = Counter()
    faulty = 0
    for watcher in watchers:
        found = watcher.check(expected[watcher.room])
        totals.update(found)
        faulty += any(found.values())
    closed_early = sum(1 for w in watchers if w.conn is not None and w.conn.close_code is not None)
    await close_all([w.conn for w in watchers if w.conn is not None], timeout=3.0)
    return {
        "watchers": len(watchers),
        "faulty_watchers": faulty,
        "closed_by_server": closed_early,
        "bad_frames": sum(w.bad_frames for w in watchers),
        "messages_expected": sum(len(expected[w.room]) for w in watchers),
        "waited_s": round(waited, 3),
        **{k: totals[k] for k in ("missing", "unexpected", "duplicates", "out_of_order")},
    }


# the runs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Servers:
    host: str
    ports: list[int]
    pids: list[int]


async def run_posting(servers: _Servers, rooms: list[str], spec: dict[str, Any]) -> dict[str, Any]:
    """Post as fast as the servers answer, to `rooms`; messages per second and the delivery check."""
    watchers = await open_watchers(servers.host, servers.ports, rooms, spec["watchers"])
    posters = [
        Poster(servers.host, servers.ports[i % len(servers.ports)], f"poster{i}")
        for i in range(spec["posters"])
    ]
    await asyncio.gather(*(p.open() for p in posters))
    posted = _Posted({room: [] for room in rooms})
    start = _perf()
    window = (start + spec["warm"], start + spec["warm"] + spec["seconds"])

    async def loop(index: int, poster: Poster) -> None:
        k = 0
        while _perf() < window[1]:
            await posted.one(poster, rooms[(index + k) % len(rooms)], window)
            k += 1

    async def usage() -> dict[str, Any]:
        await asyncio.sleep(window[0] - _perf())
        before = _Usage.now(servers.pids)
        await asyncio.sleep(window[1] - _perf())
        return _Usage.now(servers.pids).since(before, posted.counted)

    used, *_ = await asyncio.gather(usage(), *(loop(i, p) for i, p in enumerate(posters)))
    for poster in posters:
        poster.close()
    delivery = await settle_watchers(watchers, posted.ids, spec["delivery_timeout"])
    return {
        "rooms": len(rooms),
        "msgs_per_s": posted.counted / spec["seconds"],
        "posted": sum(len(ids) for ids in posted.ids.values()),
        "post_latency": _ms(posted.latencies_ms),
        "errors": dict(posted.errors),
        "usage": used,
        "delivery": delivery,
    }


async def run_joins(servers: _Servers, rooms: list[str], spec: dict[str, Any]) -> dict[str, Any]:
    """Time joins (connect to welcome) while posts go to `rooms` at a steady rate."""
    host, ports = servers.host, servers.ports
    watchers = await open_watchers(host, ports, rooms, spec["watchers"])
    pacers = spec["pacers"]
    posters = [Poster(host, ports[i % len(ports)], f"pacer{i}") for i in range(pacers)]
    await asyncio.gather(*(p.open() for p in posters))
    rate, join_rate, joins = spec["post_rate"], spec["join_rate"], spec["joins"]
    start = _perf()
    joins_from = start + spec["warm"]
    end = joins_from + joins / join_rate + 0.5
    posted = _Posted({room: [] for room in rooms})

    async def pace(index: int, poster: Poster) -> None:
        k = 0
        while (due := start + (index + k * pacers) / rate) < end:
            await asyncio.sleep(max(0.0, due - _perf()))
            await posted.one(poster, rooms[(index + k * pacers) % len(rooms)], (joins_from, end))
            k += 1

    latencies: list[float] = []
    handshakes: list[float] = []
    failures: Counter[str] = Counter()
    joiners: list[Connection] = []

    async def join(index: int) -> None:
        await asyncio.sleep(max(0.0, joins_from + index / join_rate - _perf()))
        room = rooms[index % len(rooms)]
        welcomed = asyncio.get_running_loop().create_future()

        def on_data(conn: Connection, payload: bytes) -> None:
            if not welcomed.done():
                welcomed.set_result((_perf(), _decode_frame(payload).type))

        opened = _perf()
        try:
            conn = await open_socket(
                host,
                ports[index % len(ports)],
                f"/ws/{room}?user=joiner{index}",
                on_data,
                spec["join_timeout"],
            )
            handshaked = _perf()
            joiners.append(conn)
            at, kind = await asyncio.wait_for(welcomed, spec["join_timeout"] - (handshaked - opened))
        except (OSError, TimeoutError, ConnectionError) as exc:
            failures[type(exc).__name__] += 1
            return
        if kind != "welcome":
            failures[f"first frame {kind!r}"] += 1
            return
        latencies.append((at - opened) * 1000)
        handshakes.append((handshaked - opened) * 1000)
        conn.begin_close()  # a join, then a leave: presence changes while posts go on

    async def usage() -> dict[str, Any]:
        await asyncio.sleep(joins_from - _perf())
        before = _Usage.now(servers.pids)
        await asyncio.sleep(end - _perf())
        return _Usage.now(servers.pids).since(before, posted.counted)

    used, *_ = await asyncio.gather(
        usage(), *(pace(i, p) for i, p in enumerate(posters)), *(join(i) for i in range(joins))
    )
    for poster in posters:
        poster.close()
    await close_all(joiners, timeout=3.0)
    delivery = await settle_watchers(watchers, posted.ids, spec["delivery_timeout"])
    samples = latencies + [math.inf] * sum(failures.values())
    p99 = _percentile(samples, 0.99)
    return {
        "joins": joins,
        "joined": len(latencies),
        "failures": dict(failures),
        "median_ms": statistics.median(latencies) if latencies else None,
        "p99_ms": None if p99 is None or math.isinf(p99) else p99,
        "max_ms": max(latencies) if latencies else None,
        "handshake": _ms(handshakes),
        "post_rate_wanted": rate,
        "post_rate": posted.counted / (end - joins_from),
        "post_latency": _ms(posted.latencies_ms),
        "errors": dict(posted.errors),
        "usage": used,
        "delivery": delivery,
    }


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Every run of `spec["runs"]` in turn: `{"kind": "posting" | "joins", "rooms": [...], ...}`."""
    servers = _Servers(spec["host"], spec["ports"], spec["pids"])
    results: list[dict[str, Any]] = []
    for one in spec["runs"]:
        _log(f"{one['label']}: {one['kind']} in {len(one['rooms'])} room(s)")
        runner = run_posting if one["kind"] == "posting" else run_joins
        results.append({"label": one["label"], **await runner(servers, one["rooms"], {**spec, **one})})
    return {"fd_limit": raise_fd_limit(), "runs": results}


def main() -> None:
    spec = json.loads(sys.argv[1])
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(run(spec))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

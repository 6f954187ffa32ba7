"""The WebSocket load client. It runs in a process of its own:

    python -m bench.ws_client '<spec as JSON>'

and prints one JSON document (the measurements) on stdout; progress goes to stderr.

It speaks RFC 6455 itself over asyncio protocols on uvloop instead of using a client
library: a library client costs tens of microseconds per received frame, which would
make a fan-out to 5,000 connections measure the client rather than the server. Frames
from the server are parsed with a few integer operations; frames to the server are
masked as the RFC requires. No extension is offered, so nothing is compressed.

Every wait is bounded; a broadcast that does not reach every counted connection within
its timeout is reported as a timeout ("stalled"), never waited for forever.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import socket
import statistics
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from bench.procfs import cpu_seconds, raise_fd_limit, read_rss

__all__ = ["Connection", "main"]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_OP_CONT, _OP_TEXT, _OP_BINARY, _OP_CLOSE, _OP_PING, _OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
SEQ_WIDTH = 10  # broadcast payloads start with a zero-padded sequence number
_perf = time.perf_counter


def _log(message: str) -> None:
    print(f"[ws_client] {message}", file=sys.stderr, flush=True)


def _frame(opcode: int, payload: bytes, mask: bytes) -> bytes:
    """A final, masked client frame."""
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    key = (mask * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")
    return header + mask + masked


def _server_cpu(pids: list[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


def _ignore(conn: Connection, payload: bytes) -> None:
    pass


class Connection(asyncio.Protocol):
    """One client WebSocket. `on_data(conn, payload)` is called for each data message."""

    def __init__(self, host: str, port: int, path: str) -> None:
        loop = asyncio.get_running_loop()
        self.host = host
        self.port = port
        self.path = path
        self.handshake: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.on_data: Callable[[Connection, bytes], None] = _ignore
        self.mask = os.urandom(4)
        self.is_open = False
        self.close_code: int | None = None
        self.close_sent = False
        self.received = 0
        self.counted = True
        self.sent_at = 0.0
        self._buffer = b""
        self._fragments: list[bytes] | None = None
        self._key = base64.b64encode(os.urandom(16))

    # asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not inherit from asyncio.Transport, hence the cast
        self.transport = transport = cast(asyncio.Transport, transport)
        transport.write(
            b"GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
            % (self.path.encode(), self.host.encode(), self.port, self._key)
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.is_open = False
        if not self.handshake.done():
            self.handshake.set_exception(ConnectionError(f"connection lost during the handshake: {exc!r}"))
        if not self.lost.done():
            self.lost.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self._buffer:
            data = self._buffer + data
            self._buffer = b""
        if not self.is_open:
            data = self._handshake_response(data)
            if not data:
                return
        pos = 0
        end = len(data)
        while end - pos >= 2:
            b0 = data[pos]
            length = data[pos + 1] & 0x7F
            start = pos + 2
            if length == 126:
                if end - pos < 4:
                    break
                length = (data[pos + 2] << 8) | data[pos + 3]
                start = pos + 4
            elif length == 127:
                if end - pos < 10:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                start = pos + 10
            stop = start + length
            if stop > end:
                break
            payload = data[start:stop]
            pos = stop
            opcode = b0 & 0x0F
            if opcode in (_OP_TEXT, _OP_BINARY):
                if b0 & 0x80:
                    self.received += 1
                    self.on_data(self, payload)
                else:
                    self._fragments = [payload]
            elif opcode == _OP_CONT and self._fragments is not None:
                self._fragments.append(payload)
                if b0 & 0x80:
                    whole = b"".join(self._fragments)
                    self._fragments = None
                    self.received += 1
                    self.on_data(self, whole)
            elif opcode == _OP_PING:
                self.write_frame(_OP_PONG, payload)
            elif opcode == _OP_CLOSE:
                self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                if not self.close_sent:
                    self.write_frame(_OP_CLOSE, payload[:2])
                    self.close_sent = True
        if pos < end:
            self._buffer = data[pos:]

    def _handshake_response(self, data: bytes) -> bytes:
        head_end = data.find(b"\r\n\r\n")
        if head_end < 0:
            self._buffer = data
            return b""
        head, rest = data[:head_end], data[head_end + 4 :]
        lines = head.split(b"\r\n")
        expected = base64.b64encode(hashlib.sha1(self._key + _GUID).digest())
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if not lines[0].startswith(b"HTTP/1.1 101"):
            error = ConnectionError(f"handshake refused: {lines[0].decode(errors='replace')}")
        elif headers.get(b"sec-websocket-accept") != expected:
            error = ConnectionError("handshake answered with a wrong Sec-WebSocket-Accept")
        else:
            self.is_open = True
            self.handshake.set_result(None)
            return rest
        if not self.handshake.done():
            self.handshake.set_exception(error)
        assert self.transport is not None
        self.transport.abort()
        return b""

    # sending --------------------------------------------------------------------------

    def write_frame(self, opcode: int, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_frame(opcode, payload, self.mask))

    def send_text(self, payload: bytes) -> None:
        self.write_frame(_OP_TEXT, payload)

    def begin_close(self) -> None:
        if not self.close_sent:
            self.close_sent = True
            self.write_frame(_OP_CLOSE, struct.pack("!H", 1000))


# connecting and closing ------------------------------------------------------------------


async def _connect(host: str, port: int, path: str, timeout: float, tiny_buffers: bool = False) -> Connection:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if tiny_buffers:
            # A stalled reader whose kernel buffers fill after a few KiB: a small receive
            # buffer, and a small MSS so that the server's send buffer starts small too.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
        else:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.wait_for(loop.sock_connect(sock, (host, port)), timeout)
    except BaseException:
        sock.close()
        raise
    _, conn = await loop.create_connection(lambda: Connection(host, port, path), sock=sock)
    await asyncio.wait_for(conn.handshake, timeout)
    return conn


async def connect_many(
    host: str, ports: list[int], count: int, concurrency: int = 100, path: str = "/ws"
) -> list[Connection]:
    """Open `count` connections, spread round-robin over `ports`, `concurrency` at a time."""
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int) -> Connection:
        async with gate:
            return await _connect(host, ports[index % len(ports)], path, timeout=15.0)

    results = await asyncio.gather(*(one(i) for i in range(count)), return_exceptions=True)
    conns = [r for r in results if isinstance(r, Connection)]
    failures = [r for r in results if not isinstance(r, Connection)]
    if failures:
        await close_all(conns)
        raise RuntimeError(f"{len(failures)} of {count} connections failed; first: {failures[0]!r}")
    return conns


async def close_all(conns: list[Connection], timeout: float = 5.0) -> None:
    """Close cleanly (close frame, wait for the server to hang up), abort the stragglers."""
    for conn in conns:
        conn.on_data = _ignore
        if conn.transport is not None:
            conn.transport.resume_reading()
        conn.begin_close()
    waiting = [conn.lost for conn in conns if not conn.lost.done()]
    if waiting:
        await asyncio.wait(waiting, timeout=timeout)
    for conn in conns:
        if conn.transport is not None and not conn.lost.done():
            conn.transport.abort()


# broadcasts --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Tally:
    remaining: int
    size: int
    event: asyncio.Event = field(default_factory=asyncio.Event)
    done_at: float = 0.0
    malformed: int = 0


class Broadcaster:
    """Asks the server to broadcast through `trigger`, times until the last counted receipt."""

    def __init__(self, trigger: Connection, members: list[Connection], server_pids: list[int]) -> None:
        self.trigger = trigger
        self.members = members
        self.server_pids = server_pids
        self.seq = 0
        self.pending: dict[bytes, _Tally] = {}
        self.malformed = 0
        for conn in members:
            conn.on_data = self._receive

    def _receive(self, conn: Connection, payload: bytes) -> None:
        if not conn.counted:
            return
        tally = self.pending.get(payload[:SEQ_WIDTH])
        if tally is None:
            return
        if len(payload) != tally.size:
            tally.malformed += 1
        tally.remaining -= 1
        if tally.remaining == 0:
            tally.done_at = _perf()
            tally.event.set()

    async def once(self, size: int, timeout: float) -> float | None:
        """One broadcast of a `size`-byte payload: seconds until the last counted member got it."""
        self.seq += 1
        key = b"%0*d" % (SEQ_WIDTH, self.seq)
        payload = key + b"|" + b"x" * (size - SEQ_WIDTH - 1)
        counted = sum(1 for conn in self.members if conn.counted)
        tally = _Tally(remaining=counted, size=size)
        self.pending[key] = tally
        started = _perf()
        self.trigger.send_text(b"b" + payload)
        try:
            await asyncio.wait_for(tally.event.wait(), timeout)
        except TimeoutError:
            return None
        finally:
            del self.pending[key]
            self.malformed += tally.malformed
        return tally.done_at - started

    async def sync(self, timeout: float = 15.0) -> None:
        """Broadcast until one reaches every member: all have joined the room."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await self.once(size=32, timeout=1.0) is not None:
                return
        raise RuntimeError(f"no broadcast reached all {len(self.members)} connections within {timeout:.0f} s")

    async def series(self, reps: int, size: int, timeout: float, gap: float) -> dict[str, Any]:
        """`reps` broadcasts, one after the other."""
        return (await interleaved({"": self}, reps, size, timeout, gap))[""]


async def interleaved(
    casters: dict[str, Broadcaster], reps: int, size: int, timeout: float, gap: float
) -> dict[str, dict[str, Any]]:
    """`reps` broadcasts per target, the targets taking turns (the order rotated each time).

    Turn-taking spreads bursts of outside load over every target instead of one.
    """
    names = list(casters)
    samples: dict[str, list[float]] = {name: [] for name in names}
    timeouts = dict.fromkeys(names, 0)
    delivered = dict.fromkeys(names, 0)
    busy = dict.fromkeys(names, 0.0)
    wall = dict.fromkeys(names, 0.0)
    server_cpu = {name: _server_cpu(caster.server_pids) for name, caster in casters.items()}
    for rep in range(reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            caster = casters[name]
            cpu, started = time.process_time(), _perf()
            elapsed = await caster.once(size, timeout)
            busy[name] += time.process_time() - cpu
            wall[name] += _perf() - started
            if elapsed is None:
                timeouts[name] += 1
            else:
                samples[name].append(elapsed * 1000)
                delivered[name] += sum(1 for conn in caster.members if conn.counted)
            await asyncio.sleep(gap)
    results: dict[str, dict[str, Any]] = {}
    for name, caster in casters.items():
        used = _server_cpu(caster.server_pids) - server_cpu[name]
        results[name] = {
            "members": len(caster.members),
            "size": size,
            "samples_ms": samples[name],
            "timeouts": timeouts[name],
            "median_ms": statistics.median(samples[name]) if samples[name] else None,
            # how busy this client was while broadcasts were in flight: near 1.0 would
            # mean the client, not the server, set the pace
            "client_cpu_share": busy[name] / wall[name] if wall[name] else None,
            # the server's CPU time per delivered message: unlike wall time, hardly
            # affected by other processes taking turns on the server's CPU
            "server_cpu_us_per_delivery": used * 1e6 / delivered[name]
            if delivered[name] and caster.server_pids and not timeouts[name]
            else None,
            "malformed_payloads": caster.malformed,
        }
    return results


# the steps ---------------------------------------------------------------------------------


@dataclass
class Target:
    """One server (or several serving one room, e.g. over a backplane) under test."""

    name: str
    ports: list[int]
    pids: list[int]
    echo_conns: list[Connection] = field(default_factory=list)
    members: list[Connection] = field(default_factory=list)


async def echo_window(
    conns: list[Connection], size: int, warm: float, duration: float, server_pids: list[int]
) -> dict[str, Any]:
    """Each connection sends a frame, waits for its echo, sends again; counted for `duration`."""
    message = b"e" + b"x" * (size - 1)
    frame = _frame(_OP_TEXT, message, conns[0].mask)
    running = True
    counting = False
    replies = 0
    wrong = 0
    latencies: list[float] = []
    idle = 0
    all_idle = asyncio.Event()

    def on_echo(conn: Connection, payload: bytes) -> None:
        nonlocal replies, wrong, idle
        now = _perf()
        if payload != message:
            wrong += 1
        if running:
            if counting:
                replies += 1
                latencies.append(now - conn.sent_at)
            conn.sent_at = now
            conn.transport.write(frame)  # type: ignore[union-attr]
        else:
            idle += 1
            if idle == len(conns):
                all_idle.set()

    for conn in conns:
        conn.on_data = on_echo
    started = _perf()
    for conn in conns:
        conn.sent_at = started
        conn.transport.write(frame)  # type: ignore[union-attr]
    await asyncio.sleep(warm)
    counting = True
    cpu, server_cpu, started = time.process_time(), _server_cpu(server_pids), _perf()
    await asyncio.sleep(duration)
    running = False
    stopped = _perf()
    busy = time.process_time() - cpu
    server_cpu = _server_cpu(server_pids) - server_cpu
    counted = replies
    try:
        await asyncio.wait_for(all_idle.wait(), 5.0)
    except TimeoutError:
        _log(f"echo: {len(conns) - idle} clients never got their last echo back")
    for conn in conns:
        conn.on_data = _ignore
    latencies.sort()
    return {
        "duration_s": stopped - started,
        "replies": counted,
        "per_s": counted / (stopped - started),
        "p50_ms": latencies[len(latencies) // 2] * 1000 if latencies else None,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000 if latencies else None,
        "wrong_payloads": wrong,
        "client_cpu_share": busy / (stopped - started),
        "server_cpu_s": server_cpu,
        "server_cpu_share": server_cpu / (stopped - started) if server_pids else None,
    }


async def run_echo(host: str, targets: list[Target], spec: dict[str, Any]) -> dict[str, Any]:
    """Echo rounds, the targets taking turns; per target: the median over rounds."""
    for target in targets:
        target.echo_conns = await connect_many(host, target.ports, spec["clients"])
    windows: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
    try:
        for round_index in range(spec["rounds"]):
            shift = round_index % len(targets)
            for target in targets[shift:] + targets[:shift]:
                windows[target.name].append(
                    await echo_window(
                        target.echo_conns, spec["size"], spec["warm"], spec["duration"], target.pids
                    )
                )
                await asyncio.sleep(0.2)
    finally:
        for target in targets:
            await close_all(target.echo_conns)
            target.echo_conns = []
    results: dict[str, Any] = {}
    for name, runs in windows.items():
        replies = sum(r["replies"] for r in runs)
        results[name] = {
            "clients": spec["clients"],
            "rounds": runs,
            "per_s": statistics.median(r["per_s"] for r in runs),
            "p99_ms": statistics.median(r["p99_ms"] for r in runs if r["p99_ms"] is not None),
            "server_cpu_us_per_round_trip": sum(r["server_cpu_s"] for r in runs) * 1e6 / replies
            if replies
            else None,
            "client_cpu_share": max(r["client_cpu_share"] for r in runs),
        }
    return results


async def run_slow_consumer(
    host: str, target: Target, caster: Broadcaster, spec: dict[str, Any]
) -> dict[str, Any]:
    """Fan-out time of the others, without and then with one connection that stopped reading."""
    size, timeout, gap = spec["size"], spec["timeout"], spec["gap"]
    baseline = await caster.series(spec["reps"], size, timeout, gap)

    staller = await _connect(host, target.ports[0], "/ws", timeout=15.0, tiny_buffers=True)
    staller.counted = False
    caster.members.append(staller)
    staller.on_data = _ignore
    # It is in the room once it has received a broadcast; then it stops reading.
    deadline = time.monotonic() + 15.0
    while staller.received == 0 and time.monotonic() < deadline:
        await caster.once(size=32, timeout=1.0)
    if staller.received == 0:
        raise RuntimeError("the slow consumer never received a broadcast")
    assert staller.transport is not None
    staller.transport.pause_reading()

    samples: list[float] = []
    stalled_at: int | None = None
    for index in range(spec["stall_reps"]):
        elapsed = await caster.once(size, timeout)
        if elapsed is None:
            stalled_at = index
            break
        samples.append(elapsed * 1000)
        await asyncio.sleep(gap)
    held_back = spec["stall_reps"] if stalled_at is None else stalled_at + 1
    # Read again: whatever the server kept for it arrives now, or a close frame.
    received_before = staller.received
    staller.transport.resume_reading()
    await asyncio.sleep(1.0)
    close_code = staller.close_code  # set only if the server closed it
    caster.members.remove(staller)
    await close_all([staller], timeout=2.0)
    # The baseline again, so that it brackets the stalled phase in time: a burst of outside
    # load during one side alone would otherwise pass for the stalled client's doing.
    after = await caster.series(spec["reps"], size, timeout, gap) if stalled_at is None else None
    return {
        "members": len(caster.members),
        "size": size,
        "baseline": baseline,
        "baseline_after": after,
        "stalled_samples_ms": samples,
        "stalled_at": stalled_at,
        "broadcasts_while_stalled": held_back,
        "stalled_client_close_code": close_code,
        "stalled_client_caught_up": staller.received - received_before,
        "median_ms": statistics.median(samples) if samples and stalled_at is None else None,
    }


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    host = spec["host"]
    targets = [Target(t["name"], t["ports"], t.get("pids") or []) for t in spec["targets"]]
    out: dict[str, dict[str, Any]] = {t.name: {} for t in targets}
    result: dict[str, Any] = {"fd_limit": raise_fd_limit(), "targets": out}
    settle = spec.get("settle", 1.0)
    if spec.get("echo"):
        _log(f"echo: {spec['echo']['rounds']} rounds per target")
        for name, echo in (await run_echo(host, targets, spec["echo"])).items():
            out[name]["echo"] = echo
        await asyncio.sleep(settle)
    try:
        if spec.get("warmup"):
            for target in targets:
                conns = await connect_many(host, target.ports, spec["warmup"])
                await Broadcaster(conns[0], conns, target.pids).sync()
                await close_all(conns)
            await asyncio.sleep(settle)
        before = {t.name: sum(read_rss(pid) for pid in t.pids) for t in targets}
        for target in targets:
            _log(f"{target.name}: opening {spec['members']} connections")
            opened = _perf()
            target.members = await connect_many(host, target.ports, spec["members"])
            out[target.name]["connect_s"] = _perf() - opened
        await asyncio.sleep(settle)
        if spec.get("memory"):
            for target in targets:
                after = sum(read_rss(pid) for pid in target.pids)
                out[target.name]["memory"] = {
                    "connections": len(target.members),
                    "rss_before": before[target.name],
                    "rss_after": after,
                    "per_connection_bytes": (after - before[target.name]) / len(target.members),
                }
        casters = {t.name: Broadcaster(t.members[0], t.members, t.pids) for t in targets}
        for caster in casters.values():
            await caster.sync()
            await caster.sync()
        if spec.get("fanout"):
            fan = spec["fanout"]
            _log(f"fan-out to {spec['members']}: {fan['reps']} broadcasts per target, interleaved")
            series = await interleaved(casters, fan["reps"], fan["size"], fan["timeout"], fan["gap"])
            for name, values in series.items():
                out[name]["fanout"] = values
        if spec.get("slow"):
            for target in targets:
                _log(f"{target.name}: slow consumer among {spec['members']}")
                out[target.name]["slow"] = await run_slow_consumer(
                    host, target, casters[target.name], spec["slow"]
                )
    finally:
        for target in targets:
            await close_all(target.members, timeout=3.0)
    return result


def main() -> None:
    spec = json.loads(sys.argv[1])
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(run(spec))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

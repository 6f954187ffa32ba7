"""The WebSocket load client. It runs in a process of its own:

    python -m bench.ws_client '<spec as JSON>'

and prints one JSON document (the measurements) on stdout; progress goes to stderr.

It speaks RFC 6455 itself (`bench.ws_connection`), on uvloop, so that a fan-out to 5,000
connections measures the server rather than the client.

Every wait is bounded; a broadcast that does not reach every counted connection within
its timeout is reported as a timeout ("stalled"), never waited for forever.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from bench.procfs import cpu_time, raise_fd_limit, read_rss
from bench.ws_connection import OP_TEXT, Connection, close_all, connect, connect_many, frame, ignore

__all__ = ["Broadcaster", "interleaved", "main", "run"]

SEQ_WIDTH = 10  # broadcast payloads start with a zero-padded sequence number
# what fills a broadcast's payload after its number: "x" (by default), or for the compressed
# fan-out text that compresses like a chat message's JSON (about 3:1, not 100:1)
FILLERS = {
    "x": b"x",
    "text": b'{"type":"message","room":"bench","author":"member-4711","sent":"2026-12-04T22:59:27Z",'
    b'"text":"The quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs. '
    b'Sphinx of black quartz, judge my vow! How vexingly quick daft zebras jump."}',
}
_perf = time.perf_counter


def _log(message: str) -> None:
    print(f"[ws_client] {message}", file=sys.stderr, flush=True)


def _writable(conn: Connection) -> bool:
    return conn.transport is not None and not conn.transport.is_closing() and not conn.lost.done()


def _server_cpu(pids: list[int]) -> float:
    return sum(cpu_time(pid) for pid in pids)


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

    async def once(self, size: int, timeout: float, filler: str = "x") -> float | None:
        """One broadcast of a `size`-byte payload: seconds until the last counted member got it."""
        self.seq += 1
        key = b"%0*d" % (SEQ_WIDTH, self.seq)
        fill = FILLERS[filler]
        rest = size - SEQ_WIDTH - 1
        payload = key + b"|" + (fill * (rest // len(fill) + 1))[:rest]
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
    casters: dict[str, Broadcaster], reps: int, size: int, timeout: float, gap: float, filler: str = "x"
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
    # the server's CPU time while its own broadcasts were in flight (not while the others
    # were measured: a server whose loop polls when idle would count that too)
    server_cpu = dict.fromkeys(names, 0.0)
    for rep in range(reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            caster = casters[name]
            cpu, server, started = time.process_time(), _server_cpu(caster.server_pids), _perf()
            elapsed = await caster.once(size, timeout, filler)
            server_cpu[name] += _server_cpu(caster.server_pids) - server
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
        used = server_cpu[name]
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
    """Each connection sends a frame, waits for its echo, sends again; counted for `duration`.

    A connection the server closed meanwhile is left out (and counted in `closed`)."""
    closed = [conn for conn in conns if not _writable(conn)]
    conns = [conn for conn in conns if _writable(conn)]
    if not conns:
        raise RuntimeError("echo: the server closed every connection")
    message = b"e" + b"x" * (size - 1)
    request = frame(OP_TEXT, message, conns[0].mask)
    running = True
    counting = False
    replies = 0
    wrong = 0
    latencies: list[float] = []
    idle = 0
    all_idle = asyncio.Event()

    def on_lost() -> None:
        nonlocal idle
        if not running:
            idle += 1
            if idle >= len(conns):
                all_idle.set()

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
            if _writable(conn):
                conn.transport.write(request)  # type: ignore[union-attr]
        else:
            idle += 1
            if idle == len(conns):
                all_idle.set()

    for conn in conns:
        conn.on_data = on_echo
    started = _perf()
    for conn in conns:
        conn.sent_at = started
        conn.transport.write(request)  # type: ignore[union-attr]
    # a connection the server closes during the window is idle from then on
    for conn in conns:
        conn.lost.add_done_callback(lambda _: on_lost())
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
        conn.on_data = ignore
    closed += [conn for conn in conns if not _writable(conn)]
    if closed:
        _log(
            f"echo: the server closed {len(closed)} connections (close codes {[c.close_code for c in closed]})"
        )
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
        closed_by_server = {
            t.name: [conn.close_code for conn in t.echo_conns if not _writable(conn)] for t in targets
        }
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
            # connections of this target the server closed during the echo windows
            "closed_by_server": closed_by_server[name],
        }
    return results


async def run_slow_consumer(
    host: str, target: Target, caster: Broadcaster, spec: dict[str, Any]
) -> dict[str, Any]:
    """Fan-out time of the others, without and then with one connection that stopped reading."""
    size, timeout, gap = spec["size"], spec["timeout"], spec["gap"]
    baseline = await caster.series(spec["reps"], size, timeout, gap)

    staller = await connect(host, target.ports[0], "/ws", timeout=15.0, tiny_buffers=True)
    staller.counted = False
    caster.members.append(staller)
    staller.on_data = ignore
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
    # the client has not closed it: a close frame or a closed socket is the server's doing
    evicted = close_code is not None or staller.lost.done()
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
        "stalled_client_evicted": evicted,
        "stalled_client_caught_up": staller.received - received_before,
        "median_ms": statistics.median(samples) if samples and stalled_at is None else None,
    }


async def run_compressed(host: str, targets: list[Target], spec: dict[str, Any]) -> dict[str, Any]:
    """Fan-out to `members` clients per target that offer permessage-deflate (the targets
    taking turns), after the uncompressed members have left."""
    chosen = [t for t in targets if t.name in spec["targets"]]
    for target in targets:
        await close_all(target.members, timeout=5.0)
        target.members = []
    out: dict[str, Any] = {}
    casters: dict[str, Broadcaster] = {}
    try:
        for target in chosen:
            _log(f"{target.name}: opening {spec['members']} connections offering permessage-deflate")
            target.members = await connect_many(host, target.ports, spec["members"], deflate=True)
            casters[target.name] = Broadcaster(target.members[0], target.members, target.pids)
            await casters[target.name].sync()
            await casters[target.name].sync()
        before = {name: sum(c.compressed for c in caster.members) for name, caster in casters.items()}
        series = await interleaved(
            casters, spec["reps"], spec["size"], spec["timeout"], spec["gap"], spec.get("filler", "x")
        )
        for name, values in series.items():
            members = casters[name].members
            answers = sorted({(c.extension or b"").decode() for c in members})
            values["negotiated"] = answers  # what the server answered ('' for nothing)
            values["compressed_messages"] = sum(c.compressed for c in members) - before[name]
            out[name] = values
    finally:
        for target in chosen:
            await close_all(target.members, timeout=5.0)
            target.members = []
    return out


async def run_memory(host: str, targets: list[Target], spec: dict[str, Any]) -> dict[str, Any]:
    """Idle memory per connection, one target after the other: after a warm-up, the servers'
    RSS before and after `connections` idle connections are opened."""
    out: dict[str, Any] = {}
    for target in targets:
        conns = await connect_many(host, target.ports, spec["warmup"])
        await Broadcaster(conns[0], conns, target.pids).sync()
        await close_all(conns)
        await asyncio.sleep(spec["settle"])
        before = sum(read_rss(pid) for pid in target.pids)
        _log(f"{target.name}: opening {spec['connections']} idle connections")
        opened = _perf()
        members = await connect_many(host, target.ports, spec["connections"], timeout=60.0)
        connect_s = _perf() - opened
        try:
            await asyncio.sleep(spec["settle"])
            after = sum(read_rss(pid) for pid in target.pids)
            # they are all still there: one broadcast reaches every one of them
            await Broadcaster(members[0], members, target.pids).sync(timeout=60.0)
        finally:
            closing = _perf()
            await close_all(members, timeout=60.0)
            _log(f"{target.name}: closed in {_perf() - closing:.1f} s")
        out[target.name] = {
            "connections": len(members),
            "connect_s": connect_s,
            "rss_before": before,
            "rss_after": after,
            "per_connection_bytes": (after - before) / len(members),
        }
    return out


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    host = spec["host"]
    targets = [Target(t["name"], t["ports"], t.get("pids") or []) for t in spec["targets"]]
    out: dict[str, dict[str, Any]] = {t.name: {} for t in targets}
    result: dict[str, Any] = {"fd_limit": raise_fd_limit(), "targets": out}
    if spec.get("memory_each"):
        for name, memory in (await run_memory(host, targets, spec["memory_each"])).items():
            out[name]["memory"] = memory
        return result
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
        if spec.get("compressed"):
            _log(f"compressed fan-out to {spec['compressed']['members']}")
            for name, values in (await run_compressed(host, targets, spec["compressed"])).items():
                out[name]["compressed"] = values
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

"""WebSocket benchmarks: echo, fan-out (plain and compressed), idle memory, slow consumer;
and the Redis backplane.

The load comes from `bench.ws_client`, run as a process of its own (pinned to the other
CPU when possible). Every framework's server runs at the same time, freshly started for
each run, and the client takes turns between them broadcast by broadcast (echo: window by
window), so that a burst of outside load lands on all of them rather than on one:

- "room" runs (repeated): echo with a few clients, fan-out to the small room, the
  slow-consumer test in that room (one framework after the other), then fan-out to the
  small room again with clients that offer permessage-deflate (raw ASGI and wirehall);
- a "scale" run: fan-out to the big room, in as many client processes (one after the
  other, raw ASGI in each) as the open-file limit needs;
- a "memory" run: idle memory per connection at 20,000 connections (or as many as the
  open-file limit lets one process hold), one framework after the other.

A framework whose server does not start (or dies during a run) is left out with the
reason, and the rest go on.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bench.procfs import raise_fd_limit
from bench.servers import ROOT, Placement, ServedApp, Server, serve

__all__ = ["BASELINE", "REFERENCE", "WsSettings", "percentile", "run_redis", "run_ws"]

Progress = Callable[[str], None]
T = TypeVar("T")


@dataclass(frozen=True)
class WsSettings:
    rounds: int = 2  # room runs, each against fresh servers
    echo_clients: int = 64
    echo_rounds: int = 3  # per room run, the frameworks taking turns
    echo_seconds: float = 2.0
    small_room: int = 1000
    big_room: int = 5000
    fanout_reps: int = 25  # per room run (small room) / per scale run (big room: x2)
    fanout_size: int = 64
    slow_reps: int = 10  # baseline broadcasts before the client stalls, and again after
    slow_stall_reps: int = 100
    slow_size: int = 4096
    slow_timeout: float = 2.0
    fanout_timeout: float = 5.0
    gap: float = 0.02
    compressed_reps: int = 25  # per room run, small room, clients offering permessage-deflate (0: off)
    compressed_size: int = 512  # text like a chat message's JSON (wirehall leaves < 128 B uncompressed)
    memory_connections: int = 20000  # idle memory, capped by the open-file limit
    redis_room: int = 1000
    redis_reps: int = 15  # per round


def percentile(values: list[float], fraction: float) -> float | None:
    """The `fraction` quantile by the nearest-rank method (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def _median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _summary(samples: list[float], timeouts: int = 0) -> dict[str, Any]:
    return {
        "median_ms": statistics.median(samples) if samples else None,
        "p95_ms": percentile(samples, 0.95),
        # the best case: what a broadcast costs when nothing else competed for the CPU
        "min_ms": min(samples) if samples else None,
        "count": len(samples),
        "timeouts": timeouts,
    }


def run_client(
    spec: dict[str, Any], where: Placement, log_dir: Path, label: str, timeout: float
) -> dict[str, Any]:
    """Run the load client in its own process; return what it measured."""
    log_path = log_dir / f"client-{label}.log"
    command = [*where.client_prefix(), sys.executable, "-m", "bench.ws_client", json.dumps(spec)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log
        )
        try:
            out, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
            raise RuntimeError(f"the load client ({label}) did not finish within {timeout:.0f} s") from None
        finally:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
    if process.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"the load client ({label}) failed ({process.returncode}):\n{tail}")
    result: dict[str, Any] = json.loads(out)
    return result


BASELINE = "raw-asgi"
REFERENCE = "socketify"
# the compressed fan-out runs on these (when they run): the floor and wirehall's two paths
COMPRESSED_TARGETS = ("raw-asgi", "wirehall-asgi", "wirehall-native")
# in the scale run, the frameworks the targets judge share the baseline's client process
SCALE_PRIORITY = ("wirehall-native", "wirehall-asgi", "socketify", "starlette")
FD_MARGIN = 200  # descriptors a server or the client needs besides its WebSockets


def _targets(servers: dict[str, list[Server]]) -> list[dict[str, Any]]:
    return [
        {"name": name, "ports": [s.port for s in group], "pids": [s.pid for s in group]}
        for name, group in servers.items()
    ]


def _start_all(
    stack: contextlib.ExitStack,
    apps: dict[str, ServedApp],
    where: Placement,
    log_dir: Path,
    label: str,
    failed: dict[str, str],
    progress: Progress,
) -> dict[str, list[Server]]:
    """Start every app not in `failed`; one that does not start goes into `failed` (with
    the reason, printed once) and is left out of this run and the next."""
    servers: dict[str, list[Server]] = {}
    for name, app in apps.items():
        if name in failed:
            continue
        try:
            servers[name] = [stack.enter_context(serve(f"{label}-{name}", app, where, log_dir))]
        except RuntimeError as exc:
            lines = [line for line in str(exc).splitlines() if line.strip()]
            failed[name] = f"did not start: {lines[-1] if lines else exc}"
            progress(f"  {name} is left out: {failed[name]} (log: {log_dir.name}/{label}-{name}-*.log)")
    return servers


def _with_servers(
    apps: dict[str, ServedApp],
    where: Placement,
    log_dir: Path,
    label: str,
    failed: dict[str, str],
    progress: Progress,
    body: Callable[[dict[str, list[Server]]], T],
) -> tuple[list[str], T] | None:
    """Start the servers, run `body` against them, stop them. When `body` fails because a
    server exited meanwhile, that framework joins `failed` and the step runs once more
    without it. None when no server started."""
    for attempt in range(2):
        with contextlib.ExitStack() as stack:
            servers = _start_all(stack, apps, where, log_dir, label, failed, progress)
            if not servers:
                return None
            try:
                return list(servers), body(servers)
            except RuntimeError:
                dead = {
                    name: group[0]
                    for name, group in servers.items()
                    if any(server.process.poll() is not None for server in group)
                }
                if not dead or attempt:
                    raise
                for name, server in dead.items():
                    tail = server.log_tail(3).replace("\n", " | ")
                    failed[name] = f"exited with {server.process.returncode} during {label}: {tail}"
                    progress(f"  {name} is left out: {failed[name]}")
    return None


def _room_spec(servers: dict[str, list[Server]], s: WsSettings, order: int) -> dict[str, Any]:
    names = list(servers)
    shift = order % len(names)
    spec: dict[str, Any] = {
        "host": "127.0.0.1",
        "targets": _targets({n: servers[n] for n in names[shift:] + names[:shift]}),
        "echo": {
            "clients": s.echo_clients,
            "rounds": s.echo_rounds,
            "warm": min(1.0, s.echo_seconds / 2),
            "duration": s.echo_seconds,
            "size": 32,
        },
        "members": s.small_room,
        "fanout": {
            "reps": s.fanout_reps,
            "size": s.fanout_size,
            "timeout": s.fanout_timeout,
            "gap": s.gap,
        },
        "slow": {
            "reps": s.slow_reps,
            "stall_reps": s.slow_stall_reps,
            "size": s.slow_size,
            "timeout": s.slow_timeout,
            "gap": s.gap,
        },
    }
    compressed = [n for n in names if n in COMPRESSED_TARGETS]
    if s.compressed_reps and compressed:
        spec["compressed"] = {
            "targets": compressed,
            "members": s.small_room,
            "reps": s.compressed_reps,
            "size": s.compressed_size,
            "filler": "text",
            "timeout": s.fanout_timeout,
            "gap": s.gap,
        }
    return spec


def _scale_spec(servers: dict[str, list[Server]], s: WsSettings) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "targets": _targets(servers),
        "settle": 1.5,
        "members": s.big_room,
        "fanout": {
            "reps": 2 * s.fanout_reps,
            "size": s.fanout_size,
            "timeout": s.fanout_timeout,
            "gap": s.gap,
        },
    }


def _scale_batches(names: list[str], per_client: int) -> list[list[str]]:
    """The frameworks split into client processes of at most `per_client` each (one
    process cannot hold more sockets than its open-file limit), the baseline in every one."""
    base = [BASELINE] if BASELINE in names else []
    others = sorted(
        (n for n in names if n != BASELINE),
        key=lambda n: SCALE_PRIORITY.index(n) if n in SCALE_PRIORITY else len(SCALE_PRIORITY),
    )
    room = max(1, per_client - len(base))
    batches = [base + others[i : i + room] for i in range(0, len(others), room)]
    return batches or [base]


def _run_rooms(
    apps: dict[str, ServedApp],
    where: Placement,
    log_dir: Path,
    s: WsSettings,
    failed: dict[str, str],
    progress: Progress,
) -> dict[str, list[dict[str, Any]]]:
    rooms: dict[str, list[dict[str, Any]]] = {name: [] for name in apps}
    for round_index in range(s.rounds):
        label = f"room-{round_index + 1}"

        def body(servers: dict[str, list[Server]], label: str = label, order: int = round_index) -> Any:
            timeout = 180 + len(servers) * (s.echo_rounds * (s.echo_seconds + 2) + s.small_room / 25)
            return run_client(_room_spec(servers, s, order), where, log_dir, label, timeout)

        done = _with_servers(apps, where, log_dir, label, failed, progress, body)
        if done is None:
            break
        names, result = done
        for name in names:
            r = result["targets"][name]
            rooms[name].append(r)
            sc = r["slow"]
            comp = r.get("compressed")
            progress(
                f"  ws round {round_index + 1}/{s.rounds} {name:>15}: "
                f"echo {r['echo']['per_s']:>7.0f}/s  "
                f"fan-out({s.small_room}) {_fmt_ms(r['fanout']['median_ms'])}  "
                + (f"compressed {_fmt_ms(comp['median_ms'])}  " if comp else "")
                + "slow consumer: "
                + (
                    f"stalled after {sc['stalled_at']} broadcasts"
                    if sc["stalled_at"] is not None
                    else f"{sc['median_ms']:.1f} ms vs {sc['baseline']['median_ms']:.1f} ms"
                    + (", evicted" if sc.get("stalled_client_evicted") else ", not evicted")
                )
            )
    return rooms


def _fmt_ms(value: float | None) -> str:
    return "  timeout" if value is None else f"{value:>6.1f} ms"


def _run_scale(
    apps: dict[str, ServedApp],
    where: Placement,
    log_dir: Path,
    s: WsSettings,
    failed: dict[str, str],
    progress: Progress,
    fd_limit: int,
) -> dict[str, dict[str, Any]]:
    """Fan-out to the big room, in as many client processes as the open-file limit needs."""
    per_client = max(1, (fd_limit - FD_MARGIN) // s.big_room)

    def body(servers: dict[str, list[Server]]) -> list[dict[str, Any]]:
        return [
            run_client(
                _scale_spec({n: servers[n] for n in batch}, s),
                where,
                log_dir,
                f"scale-{index + 1}",
                180 + len(batch) * s.big_room / 25,
            )["targets"]
            for index, batch in enumerate(_scale_batches(list(servers), per_client))
        ]

    done = _with_servers(apps, where, log_dir, "scale", failed, progress, body)
    scale: dict[str, dict[str, Any]] = {}
    if done is not None:
        for index, result in enumerate(done[1]):
            for name, r in result.items():
                if name in scale:  # the baseline, in every batch: its samples pooled
                    fan, more = scale[name]["fanout"], r["fanout"]
                    fan["samples_ms"] += more["samples_ms"]
                    fan["timeouts"] += more["timeouts"]
                    fan["malformed_payloads"] += more["malformed_payloads"]
                    fan["batches"].append(more)
                    cpu = [b["server_cpu_us_per_delivery"] for b in fan["batches"]]
                    fan["server_cpu_us_per_delivery"] = _median(cpu)
                    fan["client_cpu_share"] = max(b["client_cpu_share"] or 0 for b in fan["batches"])
                else:
                    r["fanout"]["batches"] = [{**r["fanout"], "samples_ms": list(r["fanout"]["samples_ms"])}]
                    r["fanout"]["batch"] = index + 1
                    scale[name] = r
                # the baseline measured by the same client, taking turns with this one:
                # what its ratio is judged against (batches run minutes apart)
                if name != BASELINE:
                    same = result.get(BASELINE, {}).get("fanout", {})
                    r["fanout"]["baseline_median_ms"] = same.get("median_ms")
                    r["fanout"]["baseline_cpu_us_per_delivery"] = same.get("server_cpu_us_per_delivery")
                progress(
                    f"  ws scale {name:>15}: fan-out({s.big_room}) {_fmt_ms(r['fanout']['median_ms'])} "
                    f"(client {index + 1}, opened in {r['connect_s']:.1f} s)"
                )
    return scale


def _run_memory(
    apps: dict[str, ServedApp],
    where: Placement,
    log_dir: Path,
    s: WsSettings,
    failed: dict[str, str],
    progress: Progress,
    fd_limit: int,
) -> dict[str, dict[str, Any]]:
    """Idle memory per connection at `memory_connections` (or as many as one process may
    open), fresh servers, one framework after the other."""
    connections = min(s.memory_connections, fd_limit - FD_MARGIN)
    if connections < s.memory_connections:
        progress(
            f"  idle memory at {connections} connections, not {s.memory_connections}: "
            f"the open-file limit is {fd_limit} (a process cannot raise it further here)"
        )

    def body(servers: dict[str, list[Server]]) -> dict[str, Any]:
        spec = {
            "host": "127.0.0.1",
            "targets": _targets(servers),
            "memory_each": {"connections": connections, "warmup": 100, "settle": 1.5},
        }
        timeout = 120 + len(servers) * (90 + connections / 100)
        result: dict[str, Any] = run_client(spec, where, log_dir, "memory", timeout)["targets"]
        return result

    done = _with_servers(apps, where, log_dir, "memory", failed, progress, body)
    memory: dict[str, dict[str, Any]] = {}
    for name, r in (done[1] if done else {}).items():
        m = r["memory"]
        memory[name] = m
        progress(
            f"  ws memory {name:>15}: {m['per_connection_bytes'] / 1024:.2f} KiB/connection at "
            f"{m['connections']} (opened in {m['connect_s']:.1f} s)"
        )
    return memory


def _framework(
    runs: list[dict[str, Any]], big: dict[str, Any] | None, memory: dict[str, Any] | None
) -> dict[str, Any]:
    small = [x for r in runs for x in r["fanout"]["samples_ms"]]
    base = [
        x
        for r in runs
        for part in (r["slow"]["baseline"], r["slow"]["baseline_after"])
        if part
        for x in part["samples_ms"]
    ]
    stalled = [x for r in runs for x in r["slow"]["stalled_samples_ms"]]
    stall_events = [r["slow"]["stalled_at"] for r in runs if r["slow"]["stalled_at"] is not None]
    slow: dict[str, Any] = {
        "baseline": _summary(base),
        "with_stalled": _summary(stalled),
        "stalled": bool(stall_events),
        "stalled_after": stall_events,
        "broadcasts_while_stalled": [r["slow"]["broadcasts_while_stalled"] for r in runs],
        "stalled_client_close_codes": [r["slow"]["stalled_client_close_code"] for r in runs],
        "evicted": all(r["slow"].get("stalled_client_evicted") for r in runs),
    }
    if not stall_events and base and stalled:
        slow["added_ms"] = statistics.median(stalled) - statistics.median(base)
    echo_rounds = [w for r in runs for w in r["echo"]["rounds"]]
    comp_runs = [r["compressed"] for r in runs if "compressed" in r]
    compressed = None
    if comp_runs:
        compressed = {
            **_summary(
                [x for c in comp_runs for x in c["samples_ms"]], sum(c["timeouts"] for c in comp_runs)
            ),
            "server_cpu_us_per_delivery": _median(c["server_cpu_us_per_delivery"] for c in comp_runs),
            "negotiated": sorted({a for c in comp_runs for a in c["negotiated"]}),
            "compressed_messages": sum(c["compressed_messages"] for c in comp_runs),
            "client_cpu_share": max(c["client_cpu_share"] or 0 for c in comp_runs),
        }
    big_fan = big["fanout"] if big else None
    return {
        "echo_per_s": statistics.median(w["per_s"] for w in echo_rounds),
        "echo_p99_ms": _median(w["p99_ms"] for w in echo_rounds),
        # the share of the echo windows the server spent on a CPU: well under 1 means other
        # work took its core, and the round trips/s say little (its CPU per round trip still does)
        "echo_server_cpu_share": _median(w["server_cpu_share"] for w in echo_rounds),
        # the best window: what the server does when nothing else took its core or the client's
        "echo_best_per_s": max(w["per_s"] for w in echo_rounds),
        "fanout_small": _summary(small, sum(r["fanout"]["timeouts"] for r in runs)),
        "fanout_big": {
            **_summary(big_fan["samples_ms"], big_fan["timeouts"]),
            # raw ASGI's median in the same client process (None for raw ASGI itself)
            "baseline_median_ms": big_fan.get("baseline_median_ms"),
            "baseline_cpu_us_per_delivery": big_fan.get("baseline_cpu_us_per_delivery"),
        }
        if big_fan
        else None,
        "fanout_compressed": compressed,
        "memory_per_connection_bytes": memory["per_connection_bytes"] if memory else None,
        "memory": memory,
        "slow_consumer": slow,
        "server_cpu_us": {
            "echo_round_trip": _median(r["echo"]["server_cpu_us_per_round_trip"] for r in runs),
            "fanout_small_delivery": _median(r["fanout"]["server_cpu_us_per_delivery"] for r in runs),
            "fanout_big_delivery": big_fan["server_cpu_us_per_delivery"] if big_fan else None,
            "fanout_compressed_delivery": compressed["server_cpu_us_per_delivery"] if compressed else None,
            "slow_baseline_delivery": _median(
                r["slow"]["baseline"]["server_cpu_us_per_delivery"] for r in runs
            ),
        },
        "client_cpu_share": {
            "echo": max(r["echo"]["client_cpu_share"] for r in runs),
            "fanout_small": max(r["fanout"]["client_cpu_share"] or 0 for r in runs),
            "fanout_big": big_fan["client_cpu_share"] if big_fan else None,
            "fanout_compressed": compressed["client_cpu_share"] if compressed else None,
        },
        "malformed_payloads": sum(r["fanout"]["malformed_payloads"] for r in runs)
        + (big_fan["malformed_payloads"] if big_fan else 0)
        + sum(c["malformed_payloads"] for c in comp_runs),
        "runs": {"room": runs, "scale": big, "memory": memory},
    }


def run_ws(
    apps: dict[str, ServedApp],
    where: Placement,
    log_dir: Path,
    s: WsSettings,
    progress: Progress,
    failed: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Every framework's server runs at once; the client takes turns between them.

    A framework in `failed` (name -> why), or whose server does not start, is left out
    with its reason in the results rather than failing the run."""
    failed = dict(failed or {})
    fd_limit = raise_fd_limit()
    rooms = _run_rooms(apps, where, log_dir, s, failed, progress)
    scale = _run_scale(apps, where, log_dir, s, failed, progress, fd_limit) if s.big_room else {}
    memory = _run_memory(apps, where, log_dir, s, failed, progress, fd_limit) if s.memory_connections else {}
    frameworks: dict[str, Any] = {}
    for name in apps:
        if rooms.get(name):
            frameworks[name] = _framework(rooms[name], scale.get(name), memory.get(name))
        else:
            frameworks[name] = {"error": failed.get(name, "not measured")}
    settings = {**s.__dict__, "memory_connections_measured": min(s.memory_connections, fd_limit - FD_MARGIN)}
    return {"settings": settings, "frameworks": frameworks, "left_out": failed}


# Redis backplane ----------------------------------------------------------------------------


def _redis_reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def redis_skip_reason(url: str = "redis://127.0.0.1:6379/0") -> str | None:
    """Why the Redis section cannot run here, or None when it can."""
    if importlib.util.find_spec("wirehall") is None:
        return "wirehall is not importable"
    if importlib.util.find_spec("wirehall.backplane.redis") is None:
        return "wirehall.backplane.redis does not exist yet"
    if importlib.util.find_spec("redis") is None:
        return "the redis package is not installed (pip install 'wirehall[redis]')"
    if not _redis_reachable("127.0.0.1", 6379):
        return f"Redis is not reachable at {url}"
    return None


def _delete_prefix(prefix: str) -> None:
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379, db=0)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def run_redis(app: str, where: Placement, log_dir: Path, s: WsSettings, progress: Progress) -> dict[str, Any]:
    """Fan-out to `redis_room` clients split over 2 processes, against 1 process in memory."""
    reason = redis_skip_reason()
    if reason is not None:
        return {"skipped": reason}
    prefix = f"wirehall-bench-{secrets.token_hex(4)}"
    redis_url = f"redis://127.0.0.1:6379/0?prefix={prefix}"
    modes = ["memory-1proc", "redis-2proc"]
    samples: dict[str, list[float]] = {mode: [] for mode in modes}
    timeouts = dict.fromkeys(modes, 0)
    cpu: dict[str, list[float | None]] = {mode: [] for mode in modes}
    try:
        for round_index in range(s.rounds):
            label = f"redis-{round_index + 1}"
            with contextlib.ExitStack() as stack:
                memory_env = {"WIREHALL_BACKPLANE": "memory://"}
                redis_env = {"WIREHALL_BACKPLANE": redis_url}
                servers = {
                    "memory-1proc": [
                        stack.enter_context(serve(f"{label}-memory", app, where, log_dir, memory_env))
                    ],
                    "redis-2proc": [
                        stack.enter_context(serve(f"{label}-redis{i}", app, where, log_dir, redis_env))
                        for i in (1, 2)
                    ],
                }
                order = modes if round_index % 2 == 0 else modes[::-1]
                spec = {
                    "host": "127.0.0.1",
                    "targets": _targets({mode: servers[mode] for mode in order}),
                    "members": s.redis_room,
                    "fanout": {
                        "reps": s.redis_reps,
                        "size": s.fanout_size,
                        "timeout": s.fanout_timeout,
                        "gap": s.gap,
                    },
                }
                result = run_client(spec, where, log_dir, label, 180 + s.redis_room / 25)
            for mode in modes:
                fan = result["targets"][mode]["fanout"]
                samples[mode].extend(fan["samples_ms"])
                timeouts[mode] += fan["timeouts"]
                cpu[mode].append(fan["server_cpu_us_per_delivery"])
                progress(
                    f"  redis round {round_index + 1}/{s.rounds} {mode:>12}: "
                    f"fan-out({s.redis_room}) {fan['median_ms']:.1f} ms"
                )
    finally:
        with contextlib.suppress(Exception):
            _delete_prefix(prefix)
    return {
        "clients": s.redis_room,
        "backplane_url": redis_url,
        "modes": {
            mode: {**_summary(values, timeouts[mode]), "server_cpu_us_per_delivery": _median(cpu[mode])}
            for mode, values in samples.items()
        },
    }

"""WebSocket benchmarks: echo, fan-out, idle memory, slow consumer; and the Redis backplane.

The load comes from `bench.ws_client`, run as a process of its own (pinned to the other
CPU when possible). Every framework's server runs at the same time, freshly started for
each run, and the client takes turns between them broadcast by broadcast (echo: window by
window), so that a burst of outside load lands on all of them rather than on one:

- "room" runs (repeated): echo with a few clients, fan-out to the small room, then the
  slow-consumer test in that room (one framework after the other);
- a "scale" run: idle memory per connection while the big rooms are opened, then fan-out
  to the big rooms.
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
from typing import Any

from bench.servers import ROOT, Placement, Server, serve

__all__ = ["WsSettings", "percentile", "run_redis", "run_ws"]

Progress = Callable[[str], None]


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


def _server_env(name: str) -> dict[str, str]:
    return {"WIREHALL_BACKPLANE": "memory://"} if name == "wirehall" else {}


def _targets(servers: dict[str, list[Server]]) -> list[dict[str, Any]]:
    return [
        {"name": name, "ports": [s.port for s in group], "pids": [s.pid for s in group]}
        for name, group in servers.items()
    ]


def _start_all(
    stack: contextlib.ExitStack, apps: dict[str, str], where: Placement, log_dir: Path, label: str
) -> dict[str, list[Server]]:
    return {
        name: [stack.enter_context(serve(f"{label}-{name}", app, where, log_dir, _server_env(name)))]
        for name, app in apps.items()
    }


def _room_spec(servers: dict[str, list[Server]], s: WsSettings, order: int) -> dict[str, Any]:
    names = list(servers)
    shift = order % len(names)
    return {
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


def _scale_spec(servers: dict[str, list[Server]], s: WsSettings) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "targets": _targets(servers),
        "warmup": 100,
        "memory": True,
        "settle": 1.5,
        "members": s.big_room,
        "fanout": {
            "reps": 2 * s.fanout_reps,
            "size": s.fanout_size,
            "timeout": s.fanout_timeout,
            "gap": s.gap,
        },
    }


def run_ws(
    apps: dict[str, str], where: Placement, log_dir: Path, s: WsSettings, progress: Progress
) -> dict[str, Any]:
    """Every framework's server runs at once; the client takes turns between them."""
    names = list(apps)
    rooms: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    room_timeout = 180 + len(names) * (s.echo_rounds * (s.echo_seconds + 2) + s.small_room / 50)
    for round_index in range(s.rounds):
        label = f"room-{round_index + 1}"
        with contextlib.ExitStack() as stack:
            servers = _start_all(stack, apps, where, log_dir, label)
            spec = _room_spec(servers, s, round_index)
            result = run_client(spec, where, log_dir, label, room_timeout)
        for name in names:
            r = result["targets"][name]
            rooms[name].append(r)
            sc = r["slow"]
            progress(
                f"  ws round {round_index + 1}/{s.rounds} {name:>10}: "
                f"echo {r['echo']['per_s']:>7.0f}/s  "
                f"fan-out({s.small_room}) {r['fanout']['median_ms']:>6.1f} ms  "
                f"slow consumer: "
                + (
                    f"stalled after {sc['stalled_at']} broadcasts"
                    if sc["stalled_at"] is not None
                    else f"{sc['median_ms']:.1f} ms vs {sc['baseline']['median_ms']:.1f} ms"
                )
            )
    with contextlib.ExitStack() as stack:
        servers = _start_all(stack, apps, where, log_dir, "scale")
        scale = run_client(
            _scale_spec(servers, s), where, log_dir, "scale", 180 + len(names) * s.big_room / 50
        )["targets"]
    for name in names:
        r = scale[name]
        progress(
            f"  ws scale {name:>10}: {r['memory']['per_connection_bytes'] / 1024:.1f} KiB"
            f"/connection, fan-out({s.big_room}) {r['fanout']['median_ms']:.1f} ms "
            f"(opened in {r['connect_s']:.1f} s)"
        )
    frameworks: dict[str, Any] = {}
    for name in names:
        runs = rooms[name]
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
        big = scale[name]
        slow: dict[str, Any] = {
            "baseline": _summary(base),
            "with_stalled": _summary(stalled),
            "stalled": bool(stall_events),
            "stalled_after": stall_events,
            "broadcasts_while_stalled": [r["slow"]["broadcasts_while_stalled"] for r in runs],
            "stalled_client_close_codes": [r["slow"]["stalled_client_close_code"] for r in runs],
        }
        if not stall_events and base and stalled:
            slow["added_ms"] = statistics.median(stalled) - statistics.median(base)
        echo_rounds = [w for r in runs for w in r["echo"]["rounds"]]
        frameworks[name] = {
            "echo_per_s": statistics.median(w["per_s"] for w in echo_rounds),
            "echo_p99_ms": _median(w["p99_ms"] for w in echo_rounds),
            "fanout_small": _summary(small, sum(r["fanout"]["timeouts"] for r in runs)),
            "fanout_big": _summary(big["fanout"]["samples_ms"], big["fanout"]["timeouts"]),
            "memory_per_connection_bytes": big["memory"]["per_connection_bytes"],
            "memory": big["memory"],
            "slow_consumer": slow,
            "server_cpu_us": {
                "echo_round_trip": _median(r["echo"]["server_cpu_us_per_round_trip"] for r in runs),
                "fanout_small_delivery": _median(r["fanout"]["server_cpu_us_per_delivery"] for r in runs),
                "fanout_big_delivery": big["fanout"]["server_cpu_us_per_delivery"],
                "slow_baseline_delivery": _median(
                    r["slow"]["baseline"]["server_cpu_us_per_delivery"] for r in runs
                ),
            },
            "client_cpu_share": {
                "echo": max(r["echo"]["client_cpu_share"] for r in runs),
                "fanout_small": max(r["fanout"]["client_cpu_share"] for r in runs),
                "fanout_big": big["fanout"]["client_cpu_share"],
            },
            "malformed_payloads": sum(r["fanout"]["malformed_payloads"] for r in runs)
            + big["fanout"]["malformed_payloads"],
            "runs": {"room": runs, "scale": big},
        }
    return {"settings": s.__dict__, "frameworks": frameworks}


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

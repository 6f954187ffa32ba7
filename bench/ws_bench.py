"""WebSocket benchmarks: echo, fan-out, idle memory, slow consumer; and the Redis backplane.

The load comes from `bench.ws_client`, run as a process of its own (pinned to the other
CPU when possible) against a fresh server per run. Two kinds of run per framework:

- "room" runs (repeated, the framework order rotated between rounds): echo with a few
  clients, then fan-out to the small room, then the slow-consumer test in that room;
- a "scale" run: idle memory per connection while the big room is opened, then fan-out
  to the big room.
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
    rounds: int = 3
    echo_clients: int = 64
    echo_seconds: float = 5.0
    small_room: int = 1000
    big_room: int = 5000
    fanout_reps: int = 10  # per round (small room) / in total (big room: x3)
    fanout_size: int = 64
    slow_reps: int = 10
    slow_stall_reps: int = 100
    slow_size: int = 4096
    slow_timeout: float = 2.0
    fanout_timeout: float = 5.0
    gap: float = 0.02
    redis_room: int = 1000
    redis_reps: int = 10  # per round


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


def _room_spec(server: Server, s: WsSettings) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "ports": [server.port],
        "server_pids": [server.pid],
        "echo": {
            "clients": s.echo_clients,
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


def _scale_spec(server: Server, s: WsSettings) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "ports": [server.port],
        "warmup": 100,
        "memory_pids": [server.pid],
        "server_pids": [server.pid],
        "settle": 1.5,
        "members": s.big_room,
        "fanout": {
            "reps": 3 * s.fanout_reps,
            "size": s.fanout_size,
            "timeout": s.fanout_timeout,
            "gap": s.gap,
        },
    }


def _server_env(name: str) -> dict[str, str]:
    return {"WIREHALL_BACKPLANE": "memory://"} if name == "wirehall" else {}


def run_ws(
    apps: dict[str, str], where: Placement, log_dir: Path, s: WsSettings, progress: Progress
) -> dict[str, Any]:
    names = list(apps)
    rooms: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    scales: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    client_timeout = 120 + s.echo_seconds + s.small_room / 50
    for round_index in range(s.rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            if name in errors:
                continue
            label = f"room-{name}-{round_index + 1}"
            try:
                with serve(f"ws-{label}", apps[name], where, log_dir, _server_env(name)) as server:
                    spec = _room_spec(server, s)
                    result = run_client(spec, where, log_dir, label, client_timeout)
            except RuntimeError as exc:
                errors[name] = str(exc)
                progress(f"  ws {name}: FAILED: {exc}")
                continue
            rooms[name].append(result)
            sc = result["slow"]
            progress(
                f"  ws round {round_index + 1}/{s.rounds} {name:>10}: "
                f"echo {result['echo']['per_s']:>7.0f}/s "
                f"(server busy {result['echo']['server_cpu_share']:.0%})  "
                f"fan-out({s.small_room}) {result['fanout']['median_ms']:.1f} ms  "
                f"slow consumer: "
                + (
                    f"stalled after {sc['stalled_at']} broadcasts"
                    if sc["stalled_at"] is not None
                    else f"{sc['median_ms']:.1f} ms vs {sc['baseline']['median_ms']:.1f} ms"
                )
            )
    for name in names:
        if name in errors:
            continue
        label = f"scale-{name}"
        try:
            with serve(f"ws-{label}", apps[name], where, log_dir, _server_env(name)) as server:
                result = run_client(_scale_spec(server, s), where, log_dir, label, 180 + s.big_room / 25)
        except RuntimeError as exc:
            errors[name] = str(exc)
            progress(f"  ws {name}: FAILED: {exc}")
            continue
        scales[name] = result
        progress(
            f"  ws scale {name:>10}: {result['memory']['per_connection_bytes'] / 1024:.1f} KiB"
            f"/connection, fan-out({s.big_room}) {result['fanout']['median_ms']:.1f} ms "
            f"(opened in {result['connect_s']:.1f} s)"
        )
    frameworks: dict[str, Any] = {}
    for name in names:
        if name in errors:
            frameworks[name] = {"error": errors[name]}
            continue
        runs = rooms[name]
        small = [x for r in runs for x in r["fanout"]["samples_ms"]]
        base = [x for r in runs for x in r["slow"]["baseline"]["samples_ms"]]
        stalled = [x for r in runs for x in r["slow"]["stalled_samples_ms"]]
        stall_events = [r["slow"]["stalled_at"] for r in runs if r["slow"]["stalled_at"] is not None]
        big = scales[name]
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
        frameworks[name] = {
            "echo_per_s": statistics.median(r["echo"]["per_s"] for r in runs),
            "echo_p99_ms": statistics.median(r["echo"]["p99_ms"] for r in runs),
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
            "malformed_payloads": sum(r["malformed_payloads"] for r in runs) + big["malformed_payloads"],
            "runs": {"room": runs, "scale": big},
        }
    return {
        "settings": s.__dict__,
        "frameworks": frameworks,
    }


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
    samples: dict[str, list[float]] = {"memory-1proc": [], "redis-2proc": []}
    timeouts = dict.fromkeys(samples, 0)
    cpu: dict[str, list[float | None]] = {mode: [] for mode in samples}
    timeout = 120 + s.redis_room / 50
    try:
        for round_index in range(s.rounds):
            order = list(samples) if round_index % 2 == 0 else list(reversed(samples))
            for mode in order:
                label = f"{mode}-{round_index + 1}"
                with contextlib.ExitStack() as stack:
                    if mode == "memory-1proc":
                        env = {"WIREHALL_BACKPLANE": "memory://"}
                        servers = [stack.enter_context(serve(f"ws-{label}", app, where, log_dir, env))]
                    else:
                        env = {"WIREHALL_BACKPLANE": redis_url}
                        servers = [
                            stack.enter_context(serve(f"ws-{label}-{i}", app, where, log_dir, env))
                            for i in (1, 2)
                        ]
                    spec = {
                        "host": "127.0.0.1",
                        "ports": [server.port for server in servers],
                        "server_pids": [server.pid for server in servers],
                        "members": s.redis_room,
                        "fanout": {
                            "reps": s.redis_reps,
                            "size": s.fanout_size,
                            "timeout": s.fanout_timeout,
                            "gap": s.gap,
                        },
                    }
                    result = run_client(spec, where, log_dir, label, timeout)
                samples[mode].extend(result["fanout"]["samples_ms"])
                timeouts[mode] += result["fanout"]["timeouts"]
                cpu[mode].append(result["fanout"]["server_cpu_us_per_delivery"])
                progress(
                    f"  redis round {round_index + 1}/{s.rounds} {mode:>12}: "
                    f"fan-out({s.redis_room}) {result['fanout']['median_ms']:.1f} ms"
                )
    finally:
        with contextlib.suppress(Exception):
            _delete_prefix(prefix)
    return {
        "clients": s.redis_room,
        "backplane_url": f"redis://127.0.0.1:6379/0?prefix={prefix}",
        "modes": {
            mode: {
                **_summary(values, timeouts[mode]),
                "server_cpu_us_per_delivery": _median(cpu[mode]),
            }
            for mode, values in samples.items()
        },
    }

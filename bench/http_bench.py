"""HTTP under `wrk`: hello world, and a typed route, per framework.

Hello world: `GET /`. The typed route (`run_typed`): `POST /items/42?limit=10&verbose=true`
with a small JSON body, decoded, validated and echoed back, beside a raw ASGI app that
decodes with msgspec itself (the floor). All servers run at once (idle ones cost nothing); each round loads every one in turn for
the same duration, the order rotated between rounds, so that a burst of noise on the
shared machine does not land on one framework only. Per framework: the median over rounds.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import re
import shutil
import statistics
import subprocess
from pathlib import Path
from typing import Any

from bench.apps import TYPED_APPS
from bench.apps.typed_common import BODY, PATH
from bench.procfs import cpu_seconds
from bench.servers import Placement, Server, serve

__all__ = ["parse_wrk", "run_http", "run_typed"]

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> dict[str, Any]:
    """Requests/s, p50/p99 latency (ms) and error counts from `wrk --latency` output."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if rps is None:
        raise ValueError(f"no Requests/sec in wrk output:\n{output}")
    result: dict[str, Any] = {"rps": float(rps.group(1))}
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", output)
    if total is None:
        raise ValueError(f"no request count in wrk output:\n{output}")
    result["requests"] = int(total.group(1))
    result["seconds"] = _ms(total.group(2) + total.group(3)) / 1000
    for label, key in (("50%", "p50_ms"), ("99%", "p99_ms")):
        match = re.search(rf"^\s+{re.escape(label)}\s+(\S+)", output, re.MULTILINE)
        result[key] = _ms(match.group(1)) if match else None
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    result["non_2xx"] = int(non_2xx.group(1)) if non_2xx else 0
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    result["socket_errors"] = sum(int(g) for g in errors.groups()) if errors else 0
    return result


def _wrk(
    server: Server,
    where: Placement,
    seconds: float,
    connections: int,
    path: str = "/",
    script: Path | None = None,
) -> dict[str, Any]:
    command = [
        *where.client_prefix(),
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        *(["-s", str(script)] if script is not None else []),
        f"http://127.0.0.1:{server.port}{path}",
    ]
    cpu = cpu_seconds(server.pid)
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30, check=False)
    cpu = cpu_seconds(server.pid) - cpu
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    result = parse_wrk(done.stdout)
    # CPU time per request hardly moves when other processes take turns on the server's
    # CPU; the server's CPU share says how much of the wall time it actually got
    result["server_cpu_us_per_request"] = cpu * 1e6 / result["requests"]
    result["server_cpu_share"] = cpu / result["seconds"]
    return result


def run_http(
    apps: dict[str, str],
    where: Placement,
    log_dir: Path,
    rounds: int,
    seconds: float,
    connections: int = 64,
    progress: Any = print,
    *,
    path: str = "/",
    script: Path | None = None,
    label: str = "http",
) -> dict[str, Any]:
    """Load every app `rounds` times for `seconds` each; medians per framework."""
    if shutil.which("wrk") is None:
        return {"skipped": "wrk is not installed"}
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in apps}
    with contextlib.ExitStack() as stack:
        servers = {
            name: stack.enter_context(serve(f"{label}-{name}", app, where, log_dir))
            for name, app in apps.items()
        }
        names = list(apps)
        for name in names:  # warm-up: imports, caches, the allocator
            _wrk(servers[name], where, 1, connections, path, script)
        for round_index in range(rounds):
            shift = round_index % len(names)
            order = names[shift:] + names[:shift]
            for name in order:
                sample = _wrk(servers[name], where, seconds, connections, path, script)
                samples[name].append(sample)
                progress(
                    f"  {label} round {round_index + 1}/{rounds} {name:>11}: "
                    f"{sample['rps']:>9.0f} req/s  p99 {sample['p99_ms']:>6.2f} ms  "
                    f"server CPU {sample['server_cpu_us_per_request']:.1f} us/req "
                    f"(busy {sample['server_cpu_share']:.0%} of the time)"
                )
    result: dict[str, Any] = {
        "rounds": rounds,
        "seconds": seconds,
        "connections": connections,
        "frameworks": {},
    }
    for name, runs in samples.items():
        result["frameworks"][name] = {
            "rps": statistics.median(r["rps"] for r in runs),
            "p99_ms": statistics.median(r["p99_ms"] for r in runs if r["p99_ms"] is not None),
            "p50_ms": statistics.median(r["p50_ms"] for r in runs if r["p50_ms"] is not None),
            "errors": sum(r["non_2xx"] + r["socket_errors"] for r in runs),
            "server_cpu_us_per_request": statistics.median(r["server_cpu_us_per_request"] for r in runs),
            "server_cpu_share": statistics.median(r["server_cpu_share"] for r in runs),
            "runs": runs,
        }
    return result


_POST_SCRIPT = """wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
"""


def run_typed(
    where: Placement,
    log_dir: Path,
    rounds: int,
    seconds: float,
    connections: int = 64,
    progress: Any = print,
) -> dict[str, Any]:
    """The typed route on each framework of `TYPED_APPS` that imports (medians, as `run_http`).

    A framework that is not installed is left out and named under "unavailable".
    """
    available: dict[str, str] = {}
    unavailable: dict[str, str] = {}
    for name, target in TYPED_APPS.items():
        try:
            importlib.import_module(target.split(":")[0])
        except ImportError as exc:
            unavailable[name] = f"{type(exc).__name__}: {exc}"
            progress(f"  typed: {name} is not benchmarked: {exc}")
        else:
            available[name] = target
    script = log_dir / "typed_post.lua"
    script.write_text(_POST_SCRIPT.format(body=json.dumps(BODY)))
    result = run_http(
        available,
        where,
        log_dir,
        rounds,
        seconds,
        connections,
        progress,
        path=PATH,
        script=script,
        label="typed",
    )
    if "skipped" in result:
        return result
    result["unavailable"] = unavailable
    result["request"] = {"path": PATH, "body": BODY}
    result["baseline"] = "raw-msgspec"
    result["title"] = f"HTTP typed route (POST {PATH}, JSON body decoded, validated, echoed)"
    return result

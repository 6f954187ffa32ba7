"""What Prometheus metrics cost: HTTP hello world and a WebSocket fan-out, metrics off and on.

The same app (`bench.apps.wirehall_app`) is served twice, the second time with
`WIREHALL_METRICS=1` (what `wirehall run --metrics` sets). HTTP: `wrk` against both, the
rounds alternating (see `http_bench.run_http`); fan-out: one room per server on wirehall's
native WebSocket protocol, the broadcasts taking turns (`ws_client.interleaved`). The
figures compared are the server's CPU time per request and per delivered message, which
hardly move when other processes share the CPU, beside requests/s and the median fan-out
time. The issue's target: metrics on within 5% of off, for both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.apps import NATIVE_WS, SLOW_CONSUMER_BUDGET
from bench.http_bench import run_http
from bench.servers import Placement, ServedApp
from bench.ws_bench import _with_servers, run_client

__all__ = ["MetricsSettings", "run_metrics"]

APP = "bench.apps.wirehall_app:app"
TARGET = 0.05  # metrics on may cost this much more than off

_ENV = (("WIREHALL_BACKPLANE", "memory://"), ("WIREHALL_BENCH_MAX_PENDING_BYTES", str(SLOW_CONSUMER_BUDGET)))
VARIANTS = {
    "metrics-off": ServedApp(APP, ws=NATIVE_WS, env=(*_ENV, ("WIREHALL_METRICS", "0"))),
    "metrics-on": ServedApp(APP, ws=NATIVE_WS, env=(*_ENV, ("WIREHALL_METRICS", "1"))),
}


@dataclass(frozen=True)
class MetricsSettings:
    http_rounds: int = 5
    http_seconds: float = 4.0
    room: int = 1000
    fanout_reps: int = 40
    fanout_size: int = 64
    fanout_timeout: float = 5.0
    gap: float = 0.02


QUICK = MetricsSettings(http_rounds=1, http_seconds=2.0, room=200, fanout_reps=10)


def _cost(off: float | None, on: float | None) -> float | None:
    """How much more `on` costs than `off` (0.03: 3% more); None when either is missing."""
    if not off or on is None:
        return None
    return on / off - 1


def run_metrics(
    where: Placement, log_dir: Path, s: MetricsSettings, progress: Callable[[str], None]
) -> dict[str, Any]:
    """HTTP hello world and a fan-out with metrics off and on; what metrics cost in each."""
    result: dict[str, Any] = {"target": TARGET}
    http = run_http(
        dict(VARIANTS),  # type: ignore[arg-type]  # serve() takes a ServedApp as well as a target
        where,
        log_dir,
        s.http_rounds,
        s.http_seconds,
        progress=progress,
        label="metrics-http",
    )
    result["http"] = http
    if "frameworks" in http:
        off, on = http["frameworks"]["metrics-off"], http["frameworks"]["metrics-on"]
        result["http_cpu_cost"] = _cost(off["server_cpu_us_per_request"], on["server_cpu_us_per_request"])
        result["http_rps_cost"] = _cost(on["rps"], off["rps"])  # fewer requests/s: a cost
    failed: dict[str, str] = {}

    def fanout(servers: dict[str, Any]) -> dict[str, Any]:
        spec = {
            "host": "127.0.0.1",
            "targets": [
                {"name": name, "ports": [g.port for g in group], "pids": [g.pid for g in group]}
                for name, group in servers.items()
            ],
            "members": s.room,
            "fanout": {
                "reps": s.fanout_reps,
                "size": s.fanout_size,
                "timeout": s.fanout_timeout,
                "gap": s.gap,
            },
        }
        return run_client(spec, where, log_dir, "metrics-fanout", 180 + s.room / 10)

    done = _with_servers(VARIANTS, where, log_dir, "metrics-ws", failed, progress, fanout)
    if done is None:
        result["fanout"] = {"skipped": "; ".join(f"{k}: {v}" for k, v in failed.items()) or "no server"}
        return result
    _, client = done
    series = {name: client["targets"][name]["fanout"] for name in client["targets"]}
    result["fanout"] = {
        name: {k: v for k, v in values.items() if k != "samples_ms"} for name, values in series.items()
    }
    off, on = series.get("metrics-off"), series.get("metrics-on")
    if off and on:
        result["fanout_cpu_cost"] = _cost(off["server_cpu_us_per_delivery"], on["server_cpu_us_per_delivery"])
        result["fanout_time_cost"] = _cost(off["median_ms"], on["median_ms"])
    for name, values in series.items():
        samples = values["samples_ms"]
        progress(
            f"  metrics fan-out({s.room}) {name:>11}: median {values['median_ms'] or 0:.2f} ms "
            f"(min {min(samples) if samples else 0:.2f})  server CPU "
            f"{values['server_cpu_us_per_delivery'] or 0:.2f} us/delivery"
        )
    progress("  " + summary(result))
    return result


def summary(result: dict[str, Any]) -> str:
    """One line: what metrics cost, against the target."""

    def pct(key: str) -> str:
        value = result.get(key)
        return "n/a" if value is None else f"{value:+.1%}"

    verdicts = [result.get(k) for k in ("http_cpu_cost", "fanout_cpu_cost")]
    known = [v for v in verdicts if v is not None]
    verdict = (
        "no figures"
        if not known
        else ("within" if max(known) <= TARGET else "over") + f" the {TARGET:.0%} target"
    )
    return (
        f"metrics on vs off: HTTP server CPU/request {pct('http_cpu_cost')}, requests/s "
        f"{pct('http_rps_cost')}; fan-out server CPU/delivery {pct('fanout_cpu_cost')}, "
        f"median time {pct('fanout_time_cost')}: {verdict}"
    )

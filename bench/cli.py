"""The command line: `python -m bench [--quick] [--only http|ws|redis|chat] [--json PATH]`."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, NoReturn

from bench.apps import APPS, HTTP_ONLY_APPS, WS_APPS
from bench.chat_bench import ChatBenchSettings, run_chat
from bench.http_bench import run_http, run_typed
from bench.metrics_bench import QUICK as QUICK_METRICS
from bench.metrics_bench import MetricsSettings, run_metrics
from bench.presence_bench import PresenceSettings, run_presence
from bench.procfs import raise_fd_limit
from bench.report import evaluate_targets, render
from bench.servers import ROOT, UVICORN_OPTIONS, ServedApp, placement
from bench.ws_bench import WsSettings, run_redis, run_ws

__all__ = ["main"]

RESULTS = ROOT / "bench" / "results"

QUICK_WS = WsSettings(
    rounds=1,
    echo_clients=16,
    echo_rounds=1,
    echo_seconds=1.0,
    small_room=200,
    big_room=500,
    fanout_reps=5,
    slow_reps=5,
    slow_stall_reps=80,
    compressed_reps=5,
    memory_connections=1000,
    redis_room=200,
    redis_reps=5,
)

QUICK_CHAT = ChatBenchSettings(
    rounds=1,
    watchers=2,
    seconds=3.0,
    joins=60,
    join_rate=30.0,
    delivery_timeout=10.0,
)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _commit() -> str:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except OSError:
        return "unknown"
    return done.stdout.strip() or "unknown"


def _importable(module: str) -> str | None:
    """None when `module` imports in a fresh interpreter, else the error's last line."""
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode == 0:
        return None
    lines = done.stderr.strip().splitlines()
    return lines[-1] if lines else f"exit status {done.returncode}"


def _ws_apps(only: str | None) -> tuple[dict[str, ServedApp], dict[str, str]]:
    """The WebSocket section's servers (all, or the comma-separated `only`) whose modules
    import, and why the others are left out."""
    chosen = list(WS_APPS) if not only else [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in WS_APPS]
    if unknown:
        raise SystemExit(f"unknown framework(s) {unknown}; choose from {list(WS_APPS)}")
    apps: dict[str, ServedApp] = {}
    unavailable: dict[str, str] = {}
    for name in chosen:
        app = WS_APPS[name]
        modules = [app.target if app.module else app.target.split(":")[0]]
        if ":" in app.ws:
            modules.append(app.ws.split(":")[0])
        errors = [e for e in (_importable(m) for m in modules) if e is not None]
        if errors:
            unavailable[name] = errors[0]
            print(f"{name} is not benchmarked: {errors[0]}")
        else:
            apps[name] = app
    return apps, unavailable


def _on_sigterm(signum: int, frame: object) -> NoReturn:
    # turn SIGTERM into an exception so every `with serve(...)` block stops its server
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    try:
        _main(argv)
    except KeyboardInterrupt:
        print("\ninterrupted: every server started was stopped", file=sys.stderr)
        raise SystemExit(130) from None


def _main(argv: list[str] | None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short smoke run (about a minute)")
    parser.add_argument(
        "--only",
        choices=["http", "ws", "redis", "chat", "presence", "metrics"],
        action="append",
        help="run only this section (repeatable)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    parser.add_argument("--http-rounds", type=int, help="HTTP rounds (default 5, quick 1)")
    parser.add_argument("--http-seconds", type=float, help="seconds per wrk run (default 4, quick 2)")
    parser.add_argument(
        "--frameworks",
        metavar="A,B",
        help=f"WebSocket section: only these, comma-separated (of {', '.join(WS_APPS)})",
    )
    parser.add_argument("--ws-rounds", type=int, help="WebSocket room runs (default 2, quick 1)")
    parser.add_argument("--echo-clients", type=int, help="WebSocket echo clients (default 64, quick 16)")
    parser.add_argument("--small-room", type=int, help="WebSocket fan-out room (default 1000, quick 200)")
    parser.add_argument(
        "--big-room", type=int, help="WebSocket scale fan-out room (default 5000, quick 500; 0: skip)"
    )
    parser.add_argument(
        "--memory-connections",
        type=int,
        help="idle connections for the memory measure (default 20000, quick 1000; 0: skip)",
    )
    parser.add_argument(
        "--compressed-reps", type=int, help="compressed fan-out broadcasts per room run (default 25; 0: skip)"
    )
    args = parser.parse_args(argv)
    sections = args.only or ["http", "ws", "redis", "chat", "presence", "metrics"]

    signal.signal(signal.SIGTERM, _on_sigterm)
    fd_limit = raise_fd_limit()
    where = placement()
    started = dt.datetime.now(dt.UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    log_dir = RESULTS / f"logs-{stamp}"
    log_dir.mkdir(parents=True, exist_ok=True)
    ws_settings = dataclasses.replace(
        QUICK_WS if args.quick else WsSettings(),
        **{
            field: value
            for field, value in (
                ("rounds", args.ws_rounds),
                ("echo_clients", args.echo_clients),
                ("small_room", args.small_room),
                ("big_room", args.big_room),
                ("memory_connections", args.memory_connections),
                ("compressed_reps", args.compressed_reps),
            )
            if value is not None
        },
    )
    http_rounds = args.http_rounds or (1 if args.quick else 5)
    http_seconds = args.http_seconds or (2.0 if args.quick else 4.0)

    apps: dict[str, str] = {}
    unavailable: dict[str, str] = {}
    for name, target in APPS.items():
        error = _importable(target.split(":")[0])
        if error is None:
            apps[name] = target
        else:
            unavailable[name] = error
            print(f"{name} is not benchmarked: {error}")

    results: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "quick": args.quick,
        "environment": {
            "commit": _commit(),
            "python": platform.python_version(),
            "uvicorn": _version("uvicorn"),
            "starlette": _version("starlette"),
            "websockets": _version("websockets"),
            "socketify": _version("socketify"),
            "cpus": os.cpu_count(),
            "placement": where.note,
            "uvicorn_options": UVICORN_OPTIONS,
            "fd_limit": fd_limit,
        },
        "unavailable": unavailable,
    }
    print(f"{where.note}; open-file limit {fd_limit}; logs in {log_dir.relative_to(ROOT)}")
    clock = time.monotonic()
    try:
        if "http" in sections:
            print("HTTP ...", flush=True)
            http_apps = {**apps, **HTTP_ONLY_APPS} if "wirehall" in apps else apps
            results["http"] = run_http(
                http_apps, where, log_dir, http_rounds, http_seconds, progress=_progress
            )
            print("HTTP typed route ...", flush=True)
            results["http_typed"] = run_typed(where, log_dir, http_rounds, http_seconds, progress=_progress)
        if "ws" in sections:
            print("WebSocket ...", flush=True)
            ws_apps, ws_unavailable = _ws_apps(args.frameworks)
            results["ws"] = run_ws(ws_apps, where, log_dir, ws_settings, _progress)
            results["ws"]["frameworks"] = {
                name: results["ws"]["frameworks"].get(name) or {"error": ws_unavailable[name]}
                for name in [n for n in WS_APPS if n in ws_apps or n in ws_unavailable]
            }
            results["ws"]["left_out"].update(ws_unavailable)
        if "redis" in sections:
            print("Redis backplane ...", flush=True)
            if "wirehall" in apps:
                results["redis"] = run_redis(apps["wirehall"], where, log_dir, ws_settings, _progress)
            else:
                results["redis"] = {"skipped": f"wirehall app: {unavailable['wirehall']}"}
                _progress(f"  skipped: {results['redis']['skipped']}")
        if "chat" in sections:
            print("Chat (two processes over Redis, SQLite and PostgreSQL) ...", flush=True)
            results["chat"] = run_chat(
                where, log_dir, QUICK_CHAT if args.quick else ChatBenchSettings(), _progress
            )
        if "presence" in sections:
            print("Presence (a crowd joining one chat room) ...", flush=True)
            counts = (300,) if args.quick else PresenceSettings().counts
            results["presence"] = run_presence(where, log_dir, PresenceSettings(counts=counts), _progress)
        if "metrics" in sections:
            print("Metrics on vs off (HTTP hello world, fan-out) ...", flush=True)
            chosen = QUICK_METRICS if args.quick else MetricsSettings()
            results["metrics"] = run_metrics(where, log_dir, chosen, _progress)
    finally:
        results["elapsed_s"] = round(time.monotonic() - clock, 1)
        results["targets"] = [t.__dict__ for t in evaluate_targets(results)]
        text = json.dumps(results, indent=2, default=str)
        out = RESULTS / f"{stamp}.json"
        out.write_text(text)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(text)
    print()
    print(render(results))
    print(f"\n{results['elapsed_s']:.0f} s; results in {out.relative_to(ROOT)}")


def _progress(line: str) -> None:
    print(line, flush=True)

"""The command line: `python -m bench [--quick] [--only http|ws|redis|chat] [--json PATH]`."""

from __future__ import annotations

import argparse
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

from bench.apps import APPS, HTTP_ONLY_APPS
from bench.chat_bench import ChatBenchSettings, run_chat
from bench.http_bench import run_http, run_typed
from bench.presence_bench import PresenceSettings, run_presence
from bench.procfs import raise_fd_limit
from bench.report import evaluate_targets, render
from bench.servers import ROOT, UVICORN_OPTIONS, placement
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
        choices=["http", "ws", "redis", "chat", "presence"],
        action="append",
        help="run only this section (repeatable)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    parser.add_argument("--http-rounds", type=int, help="HTTP rounds (default 5, quick 1)")
    parser.add_argument("--http-seconds", type=float, help="seconds per wrk run (default 4, quick 2)")
    args = parser.parse_args(argv)
    sections = args.only or ["http", "ws", "redis", "chat", "presence"]

    signal.signal(signal.SIGTERM, _on_sigterm)
    fd_limit = raise_fd_limit()
    where = placement()
    started = dt.datetime.now(dt.UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    log_dir = RESULTS / f"logs-{stamp}"
    log_dir.mkdir(parents=True, exist_ok=True)
    ws_settings = QUICK_WS if args.quick else WsSettings()
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
            results["ws"] = run_ws(apps, where, log_dir, ws_settings, _progress)
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

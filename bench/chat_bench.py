"""The chat example itself, across processes: posting throughput and join latency.

For each database (SQLite in a temporary file, then a fresh PostgreSQL database on
127.0.0.1:5432 that the bench creates and drops), two `wirehall run examples.chat:app`
processes (one worker each, pinned to the servers' CPU) share a Redis backplane (a prefix
of their own, deleted afterwards) and the database. The load client (`bench.chat_client`,
pinned to the other CPU) then measures, against both processes at once:

- posting throughput (`POST /api/rooms/{room}/messages`) to 1 room and spread over
  `rooms` rooms, `rounds` times each (the order alternating), with WebSocket watchers in
  every room checking that each acknowledged message reached them once, in order;
- join latency (connect to welcome frame) while posts go on at a steady `post_rate`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.servers import ROOT, Placement, serve_wirehall
from bench.ws_bench import redis_skip_reason

__all__ = ["ChatBenchSettings", "run_chat"]

Progress = Callable[[str], None]

APP = "examples.chat:app"
POSTGRES_ADMIN_URL = os.environ.get("POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_DB = 0


@dataclass(frozen=True)
class ChatBenchSettings:
    rounds: int = 2  # posting runs per room count, per database
    posters: int = 32  # keep-alive HTTP connections, split over the two processes
    rooms: int = 50
    watchers: int = 4  # WebSockets per room, split over the two processes
    warm: float = 1.0  # seconds of posting before the measured window
    seconds: float = 10.0  # measured window of a posting run
    post_rate: float = 200.0  # messages a second while joins are timed
    pacers: int = 16  # connections that post at that rate
    joins: int = 200
    join_rate: float = 20.0  # joins started a second
    join_timeout: float = 10.0
    delivery_timeout: float = 20.0


# databases ----------------------------------------------------------------------------------


def _postgres(*statements: str) -> None:
    import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information

    async def run() -> None:
        conn = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


def postgres_skip_reason() -> str | None:
    """Why the PostgreSQL runs cannot happen here, or None when they can."""
    if importlib.util.find_spec("asyncpg") is None:
        return "asyncpg is not installed (pip install -e '.[examples]')"
    try:
        _postgres("SELECT 1")
    except Exception as exc:  # noqa: BLE001  # any failure to connect means "not reachable"
        return f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {exc!r}"
    return None


@contextlib.contextmanager
def _database(kind: str) -> Iterator[str]:
    """A fresh, empty chat database of `kind` ("sqlite" or "postgresql"); its URL."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="wirehall-chat-bench-") as folder:
            yield f"sqlite+aiosqlite:///{folder}/chat.db"
        return
    name = f"wirehall_chat_bench_{secrets.token_hex(4)}"
    _postgres(f'CREATE DATABASE "{name}"')
    try:
        host = POSTGRES_ADMIN_URL.split("://", 1)[1].rsplit("/", 1)[0]
        yield f"postgresql+asyncpg://{host}/{name}"
    finally:
        _postgres(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _delete_redis_prefix(prefix: str) -> None:
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


# the load client ----------------------------------------------------------------------------


def _run_client(spec: dict[str, Any], where: Placement, log_dir: Path, label: str, timeout: float) -> Any:
    log_path = log_dir / f"client-{label}.log"
    command = [*where.client_prefix(), sys.executable, "-m", "bench.chat_client", json.dumps(spec)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log
        )
        try:
            out, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(
                f"the chat load client ({label}) did not finish within {timeout:.0f} s"
            ) from None
        finally:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
    if process.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"the chat load client ({label}) failed ({process.returncode}):\n{tail}")
    return json.loads(out)


def _plan(s: ChatBenchSettings) -> list[dict[str, Any]]:
    """The client's runs: posting to 1 room and to `rooms` rooms (alternating), then the joins.
    Every run has rooms of its own, so each starts empty."""
    runs = []
    for index in range(s.rounds):
        one = {"kind": "posting", "label": f"1 room #{index + 1}", "rooms": [f"solo{index}"]}
        spread = {
            "kind": "posting",
            "label": f"{s.rooms} rooms #{index + 1}",
            "rooms": [f"r{i:02d}-{index}" for i in range(s.rooms)],
        }
        runs.extend([one, spread] if index % 2 == 0 else [spread, one])
    runs.append({"kind": "joins", "label": "joins", "rooms": [f"join{i:02d}" for i in range(s.rooms)]})
    return runs


def _summarise(runs: list[dict[str, Any]], s: ChatBenchSettings) -> dict[str, Any]:
    def posting(rooms: int) -> dict[str, Any]:
        chosen = [r for r in runs if r.get("rooms") == rooms and "msgs_per_s" in r]
        cpu = [r["usage"]["servers_cpu_us_per_message"] for r in chosen]
        database = [r["usage"].get("postgres_cpu_us_per_message") for r in chosen]
        return {
            "msgs_per_s": statistics.median(r["msgs_per_s"] for r in chosen),
            "post_p99_ms": statistics.median(r["post_latency"]["p99_ms"] or 0 for r in chosen),
            "servers_cpu_us_per_message": statistics.median(c for c in cpu if c) if any(cpu) else None,
            # every PostgreSQL process on the machine, whoever it serves
            "postgres_cpu_us_per_message": statistics.median(c for c in database if c)
            if any(database)
            else None,
            "servers_cpu_share": statistics.median(r["usage"]["servers_cpu_share"] for r in chosen),
            "errors": sum(sum(r["errors"].values()) for r in chosen),
            "runs": [r["msgs_per_s"] for r in chosen],
        }

    one, many = posting(1), posting(s.rooms)
    joins = next(r for r in runs if "joins" in r)
    checks = [r["delivery"] for r in runs]
    return {
        "one_room": one,
        "many_rooms": many,
        "ratio": many["msgs_per_s"] / one["msgs_per_s"] if one["msgs_per_s"] else None,
        "join": joins,
        "delivery": {
            "watchers": sum(c["watchers"] for c in checks),
            "faulty_watchers": sum(c["faulty_watchers"] for c in checks),
            **{
                key: sum(c[key] for c in checks)
                for key in ("missing", "unexpected", "duplicates", "out_of_order", "closed_by_server")
            },
        },
        "load": {
            "machine_busy_share": statistics.median(r["usage"]["machine_busy_share"] or 0 for r in runs),
            "others_cpus": statistics.median(r["usage"]["others_cpus"] for r in runs),
            "load_average": max(r["usage"]["load_average"] for r in runs),
            "client_cpu_share": max(r["usage"]["client_cpu_share"] for r in runs),
        },
        "runs": runs,
    }


def _run_database(
    kind: str, where: Placement, log_dir: Path, s: ChatBenchSettings, progress: Progress
) -> dict[str, Any]:
    prefix = f"wirehall-chat-bench-{secrets.token_hex(4)}"
    env = {
        "WIREHALL_BACKPLANE": f"redis://127.0.0.1:6379/{REDIS_DB}?prefix={prefix}",
        "CHAT_RATE_LIMIT": "0",  # WebSocket posts only; the bench posts over HTTP
        "CHAT_MAX_CONNECTIONS_PER_ADDRESS": "0",  # every client is 127.0.0.1
        "PYTHONUNBUFFERED": "1",
    }
    plan = _plan(s)
    timeout = 180 + len(plan) * (s.warm + s.seconds + s.delivery_timeout + 10) + s.joins / s.join_rate
    try:
        with _database(kind) as url, contextlib.ExitStack() as stack:
            env["CHAT_DATABASE_URL"] = url
            # one after the other: the first creates the schema
            servers = [
                stack.enter_context(serve_wirehall(f"chat-{kind}-{i}", APP, where, log_dir, env))
                for i in (1, 2)
            ]
            spec = {
                "host": "127.0.0.1",
                "ports": [server.port for server in servers],
                "pids": [server.pid for server in servers],
                "runs": plan,
                **asdict(s),
            }
            result = _run_client(spec, where, log_dir, f"chat-{kind}", timeout)
    finally:
        with contextlib.suppress(Exception):
            _delete_redis_prefix(prefix)
    for run in result["runs"]:
        if "msgs_per_s" in run:
            progress(
                f"  chat {kind:>10} {run['label']:<14}: {run['msgs_per_s']:>7.0f} msgs/s, "
                f"post p99 {run['post_latency']['p99_ms'] or 0:.1f} ms, "
                f"errors {sum(run['errors'].values())}, faulty watchers {run['delivery']['faulty_watchers']}"
            )
        else:
            progress(
                f"  chat {kind:>10} joins at {run['post_rate']:.0f} msgs/s: "
                f"median {run['median_ms'] or 0:.1f} ms, p99 {run['p99_ms'] or float('nan'):.1f} ms, "
                f"{run['joined']}/{run['joins']} joined"
            )
    return _summarise(result["runs"], s)


def run_chat(where: Placement, log_dir: Path, s: ChatBenchSettings, progress: Progress) -> dict[str, Any]:
    """The chat on SQLite and on PostgreSQL, two processes over Redis (see the module's docstring)."""
    reason = redis_skip_reason()
    if reason is not None:
        return {"skipped": reason}
    databases: dict[str, Any] = {}
    for kind in ("sqlite", "postgresql"):
        skip = postgres_skip_reason() if kind == "postgresql" else None
        if skip is not None:
            databases[kind] = {"skipped": skip}
            progress(f"  chat {kind}: skipped: {skip}")
            continue
        try:
            databases[kind] = _run_database(kind, where, log_dir, s, progress)
        except RuntimeError as exc:
            databases[kind] = {"error": str(exc)}
            progress(f"  chat {kind}: failed: {exc}")
    return {"settings": asdict(s), "databases": databases}

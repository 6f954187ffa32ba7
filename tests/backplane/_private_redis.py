"""A redis-server of the test's own, for outages that must not touch the shared Redis."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
import redis

from tests.conftest import free_port

__all__ = ["PrivateRedis", "running_private_redis"]

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def _require_redis() -> bool:
    return os.environ.get("WIREHALL_REQUIRE_REDIS", "") not in ("", "0", "false", "no")


class PrivateRedis:
    """A redis-server of our own (no persistence) that a test may kill, stop and restart."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with redis.Redis(port=self.port, socket_timeout=0.5) as client:
                    client.ping()
                return
            except (redis.RedisError, OSError):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.05)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


def running_private_redis() -> Iterator[PrivateRedis]:
    """A started PrivateRedis, killed afterwards; skips (or fails) without redis-server."""
    if not os.path.exists(REDIS_SERVER):
        if _require_redis():
            pytest.fail(f"{REDIS_SERVER} is required (WIREHALL_REQUIRE_REDIS=1)")
        pytest.skip(f"{REDIS_SERVER} is not installed")
    server = PrivateRedis(free_port())
    server.start()
    yield server
    if server.process is not None:
        server.resume()
        server.kill()

"""`wirehall run` in a subprocess for the hostile tests: its log, its memory, and its address."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests._servers import stop_process, wait_until_serving

__all__ = ["RunningServer", "exchange", "rss_kib", "wirehall_run"]

ROOT = Path(__file__).resolve().parents[2]
WIREHALL = Path(sys.executable).with_name("wirehall")


class RunningServer:
    """A started `wirehall run`: where it listens, its process and what it logged."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.process = process
        self.port = port
        self.log_path = log_path

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def log(self) -> str:
        """Everything the server wrote to stdout and stderr so far."""
        return self.log_path.read_text(errors="replace")

    def peak_rss_kib(self) -> int:
        """The server's peak resident memory so far (VmHWM), in KiB."""
        return rss_kib(self.process.pid, "VmHWM")

    def rss_kib(self) -> int:
        """The server's resident memory now (VmRSS), in KiB."""
        return rss_kib(self.process.pid, "VmRSS")


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """A memory figure of process `pid` from /proc (`VmRSS`, `VmHWM`), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(f"/proc/{pid}/status has no {field}")


@contextmanager
def wirehall_run(
    port: int,
    log_path: Path,
    *options: str,
    app: str = "tests.hostile._app:app",
    env: dict[str, str] | None = None,
    ws: str | None = None,
) -> Iterator[RunningServer]:
    """Run `wirehall run APP --port PORT OPTIONS...` until the block ends; wait until it answers.

    `ws` is the `--ws` value (the WebSocket path: tests/conftest.py's `server_ws` fixture).
    """
    environ = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **(env or {})}
    for name in (
        "WIREHALL_BACKPLANE",
        "WIREHALL_ALLOWED_HOSTS",
        "WIREHALL_MAX_HEAD_SIZE",
        "WIREHALL_HEAD_TIMEOUT",
    ):
        if env is None or name not in env:
            environ.pop(name, None)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                *(str(WIREHALL), "run", app, "--host", "127.0.0.1", "--port", str(port)),
                *(["--ws", ws] if ws else []),
                *options,
            ],
            cwd=ROOT,
            env=environ,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = RunningServer(process, port, log_path)
    try:
        wait_until_serving(process, f"{server.http_url}/healthz", log=server.log)
        yield server
    finally:
        stop_process(process, signal.SIGINT, 10)


async def exchange(port: int, request: bytes, *, timeout: float = 5.0) -> bytes:
    """Send raw `request` bytes to 127.0.0.1:`port`; the first answer, head and body (b"" on a close).

    The head and the body may arrive in separate reads: reads go on until the head is
    complete and then until `content-length` bytes of body (none for a 101 or a head without
    a length), or until the server closes, or `timeout` seconds in all.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(_read_answer(reader), timeout)
    finally:
        writer.close()


async def _read_answer(reader: asyncio.StreamReader) -> bytes:
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = await reader.read(65536)
        if not chunk:
            return answer
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = await reader.read(65536)
        if not chunk:
            break
        body += chunk
        answer += chunk
    return answer

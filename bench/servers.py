"""Starting and stopping the servers under test, and where processes run (CPU pinning).

Every server is `python -m uvicorn APP` with the same settings, started in a subprocess
and stopped by its PID (SIGTERM, then SIGKILL) when its `with` block ends, errors included.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from bench.procfs import raise_fd_limit

__all__ = [
    "UVICORN_OPTIONS",
    "WIREHALL_RUN_OPTIONS",
    "Placement",
    "ServedApp",
    "Server",
    "free_port",
    "placement",
    "serve",
    "serve_wirehall",
]

UVICORN_OPTIONS = [
    "--host",
    "127.0.0.1",
    "--loop",
    "uvloop",
    "--http",
    "httptools",
    "--ws",
    "websockets-sansio",
    "--no-access-log",
    "--log-level",
    "warning",
]

# `wirehall run` chooses uvloop, httptools and its own WebSocket protocol by itself
WIREHALL_RUN_OPTIONS = ["--host", "127.0.0.1", "--no-access-log", "--log-level", "warning"]

# the project root: the servers import `bench.apps.*` and `wirehall` from here
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class ServedApp:
    """How one benchmarked server is started.

    `target` is a uvicorn import string (`module:app`), served with `UVICORN_OPTIONS`
    and `ws` as the WebSocket protocol (uvicorn's name or `module:Class`); or, with
    `module=True`, a module run as `python -m target --port N [args]` (socketify).
    """

    target: str
    ws: str = "websockets-sansio"
    module: bool = False
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()

    def command(self, port: int) -> list[str]:
        if self.module:
            return [sys.executable, "-m", self.target, "--port", str(port), *self.args]
        options = list(UVICORN_OPTIONS)
        options[options.index("--ws") + 1] = self.ws
        return [sys.executable, "-m", "uvicorn", self.target, "--port", str(port), *options, *self.args]


@dataclass(frozen=True)
class Placement:
    """Which CPU the servers and the load generators run on (empty: not pinned)."""

    server_cpus: str
    client_cpus: str
    note: str

    def server_prefix(self) -> list[str]:
        return ["taskset", "-c", self.server_cpus] if self.server_cpus else []

    def client_prefix(self) -> list[str]:
        return ["taskset", "-c", self.client_cpus] if self.client_cpus else []


def placement() -> Placement:
    """Servers on one core and load generators on another, when `taskset` and 2 CPUs allow."""
    cpus = sorted(os.sched_getaffinity(0))
    if shutil.which("taskset") is None:
        return Placement("", "", "not pinned: taskset is not installed")
    if len(cpus) < 2:
        return Placement("", "", f"not pinned: only {len(cpus)} CPU available")
    server, client = str(cpus[0]), str(cpus[1])
    return Placement(
        server, client, f"pinned with taskset: server(s) on CPU {server}, load client on CPU {client}"
    )


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _raise_fd_limit() -> None:
    raise_fd_limit()


@dataclass
class Server:
    """A running uvicorn process."""

    name: str
    app: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _get(port: int, timeout: float) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def _wait_ready(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"{server.name} exited with {server.process.returncode} while starting:\n{server.log_tail()}"
            )
        try:
            response = _get(server.port, timeout=2.0)
        except OSError as exc:
            last = exc
            time.sleep(0.05)
            continue
        if response.startswith(b"HTTP/1.1 200") and response.endswith(b"Hello, world!"):
            return
        raise RuntimeError(f"{server.name}: GET / answered {response[:200]!r}")
    raise RuntimeError(f"{server.name} did not answer within {timeout:.0f} s ({last!r})")


def _stop(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=5.0)


@contextlib.contextmanager
def serve(
    name: str,
    app: str | ServedApp,
    where: Placement,
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    startup_timeout: float = 30.0,
) -> Iterator[Server]:
    """Run `app` (under uvicorn, unless a `ServedApp` says otherwise) on a free loopback
    port until the block ends."""
    served = app if isinstance(app, ServedApp) else ServedApp(app)
    log_dir.mkdir(parents=True, exist_ok=True)
    attempts = 3
    for attempt in range(1, attempts + 1):
        port = free_port()
        log_path = log_dir / f"{name}-{port}.log"
        command = [*where.server_prefix(), *served.command(port)]
        environment = {**os.environ, **dict(served.env), **(env or {})}
        environment["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), environment.get("PYTHONPATH", "")) if p
        )
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_raise_fd_limit,  # only setrlimit, before exec
            )
        server = Server(name, served.target, port, process, log_path)
        try:
            try:
                _wait_ready(server, startup_timeout)
            except RuntimeError:
                # another process may have taken the port between choosing and binding it
                if attempt < attempts and "address already in use" in server.log_tail().lower():
                    continue
                raise
            yield server
            return
        finally:
            _stop(process)


def _wait_ok(server: Server, path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"{server.name} exited with {server.process.returncode} while starting:\n{server.log_tail()}"
            )
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=2.0) as sock:
                sock.sendall(request)
                response = b"".join(iter(lambda: sock.recv(65536), b""))
        except OSError as exc:
            last = exc
            time.sleep(0.05)
            continue
        if response.startswith(b"HTTP/1.1 200"):
            return
        raise RuntimeError(f"{server.name}: GET {path} answered {response[:200]!r}")
    raise RuntimeError(f"{server.name} did not answer within {timeout:.0f} s ({last!r})")


@contextlib.contextmanager
def serve_wirehall(
    name: str,
    app: str,
    where: Placement,
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    ready_path: str = "/healthz",
    startup_timeout: float = 30.0,
) -> Iterator[Server]:
    """Run `wirehall run APP` (one worker) on a free loopback port until the block ends;
    ready once `GET ready_path` answers 200."""
    log_dir.mkdir(parents=True, exist_ok=True)
    script = Path(sys.executable).with_name("wirehall")
    runner = [str(script)] if script.exists() else [sys.executable, "-m", "wirehall.cli"]
    attempts = 3
    for attempt in range(1, attempts + 1):
        port = free_port()
        log_path = log_dir / f"{name}-{port}.log"
        command = [*where.server_prefix(), *runner, "run", app, "--port", str(port), *WIREHALL_RUN_OPTIONS]
        environment = {**os.environ, **(env or {})}
        environment["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), environment.get("PYTHONPATH", "")) if p
        )
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_raise_fd_limit,  # only setrlimit, before exec
            )
        server = Server(name, app, port, process, log_path)
        try:
            try:
                _wait_ok(server, ready_path, startup_timeout)
            except RuntimeError:
                if attempt < attempts and "address already in use" in server.log_tail().lower():
                    continue
                raise
            yield server
            return
        finally:
            _stop(process)

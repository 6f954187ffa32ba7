"""A real chat server in a subprocess (`wirehall run examples.chat:app`), for the tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx

ROOT = Path(__file__).resolve().parents[2]
WIREHALL = Path(sys.executable).with_name("wirehall")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0


class ChatServer:
    """`wirehall run examples.chat:app` on 127.0.0.1:`port`, with its own database and log."""

    def __init__(self, port: int, database_url: str, log_path: Path, *, backplane: str | None = None) -> None:
        self.port = port
        self.database_url = database_url
        self.log_path = log_path
        self.backplane = backplane
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, room: str, **query: str | int) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/{room}" + (f"?{urlencode(query)}" if query else "")

    def start(self) -> None:
        """Start the server and wait until `/healthz` answers."""
        env = dict(os.environ)
        env["CHAT_DATABASE_URL"] = self.database_url
        env.pop("WIREHALL_BACKPLANE", None)
        if self.backplane is not None:
            env["WIREHALL_BACKPLANE"] = self.backplane
        env["PYTHONUNBUFFERED"] = "1"
        command = [
            str(WIREHALL),
            "run",
            "examples.chat:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--log-level",
            "info",
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        with httpx.Client(trust_env=False, timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the chat server exited at start:\n{self.log()}")
                try:
                    if client.get(self.http_url + "/healthz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the chat server did not answer /healthz in time:\n{self.log()}")

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int | None:
        """Stop the server by its PID and wait for it; returns its exit code."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(sig)
            try:
                return process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                return process.wait(STOP_TIMEOUT)
        return process.returncode

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no log)"

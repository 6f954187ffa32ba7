"""A real chat server in a subprocess (`wirehall run examples.chat:app`), for the tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlencode

from tests._servers import stop_process, wait_until_serving

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
        try:
            url = self.http_url + "/healthz"
            wait_until_serving(self.process, url, timeout=START_TIMEOUT, log=self.log).raise_for_status()
        except BaseException:
            self.stop()
            raise

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int | None:
        """Stop the server by its PID and wait for it; returns its exit code."""
        process, self.process = self.process, None
        if process is None:
            return None
        return stop_process(process, sig, STOP_TIMEOUT)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no log)"

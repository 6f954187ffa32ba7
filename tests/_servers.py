"""Test servers in subprocesses: wait until one answers HTTP, stop it by its PID."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable

import httpx

__all__ = ["stop_process", "wait_until_serving"]


def wait_until_serving(
    process: subprocess.Popen[bytes],
    url: str,
    *,
    timeout: float = 20.0,
    log: Callable[[], str] = lambda: "",
) -> httpx.Response:
    """Poll `url` until the server answers it; the first answer, whatever its status.

    Raises RuntimeError, with `log()`, when the process exits or `timeout` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    with httpx.Client(trust_env=False, timeout=2.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(
                    f"the test server exited with {process.returncode} before answering {url}:\n{log()}"
                )
            try:
                return client.get(url)
            except httpx.TransportError:
                time.sleep(0.1)
    raise RuntimeError(f"the test server did not answer {url} within {timeout}s:\n{log()}")


def stop_process(
    process: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGTERM, timeout: float = 15.0
) -> int:
    """Send `sig` to `process` and wait; kill it if it outlives `timeout`. Its exit code."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait(timeout)
    return process.returncode

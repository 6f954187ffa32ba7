"""Fixtures for the security tests: a uvicorn process serving `browser_app`."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._servers import stop_process, wait_until_serving
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def server(server_ws: str) -> Iterator[int]:
    """The port of a uvicorn process serving tests.security.browser_app (killed afterwards)."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "tests.security.browser_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--ws",
            server_ws,
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        wait_until_serving(process, f"http://127.0.0.1:{port}/")
        yield port
    finally:
        stop_process(process)

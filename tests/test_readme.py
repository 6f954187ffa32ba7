"""The README's tour and its test run as written, under a bare `pytest` (no pytest-asyncio)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_the_readme_tour_and_its_test_pass_under_a_bare_pytest(tmp_path: Path) -> None:
    blocks = _python_blocks((ROOT / "README.md").read_text())
    tour = next(block for block in blocks if "app = Wirehall()" in block and "class Room" in block)
    test = next(block for block in blocks if "def test_hello" in block)
    (tmp_path / "test_tour.py").write_text(tour + "\n\n" + test)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # none of the project's settings
    env = {**os.environ, "PYTHONPATH": ""}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:asyncio", "-p", "no:cacheprovider", "-q", "-W", "error"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout, done.stdout

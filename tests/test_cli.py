"""The `wirehall` command: `routes` and `run` (with bad input; one real server as a smoke test)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import click
import httpx
import pytest
from click.testing import CliRunner

from tests._servers import stop_process, wait_until_serving
from wirehall.cli import load_app, main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.chdir(ROOT)
    return CliRunner()


def test_routes_prints_the_table(runner: CliRunner) -> None:
    result = runner.invoke(main, ["routes", "tests._apps.hello:app"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["METHODS", "PATH", "ENDPOINT"]
    rows = [line.split() for line in lines[1:]]
    assert ["GET", "/healthz", "tests._apps.hello.health"] in rows
    assert ["DELETE,GET", "/api/items/{id:int}", "tests._apps.hello.Items"] in rows
    assert len(rows) == 2
    # columns line up
    assert len({line.index("/") for line in lines[1:]}) == 1


def test_routes_of_something_that_is_not_a_wirehall_app(runner: CliRunner) -> None:
    result = runner.invoke(main, ["routes", "tests._apps.hello:plain_asgi"])
    assert result.exit_code == 1
    assert "not a wirehall app" in result.output


@pytest.mark.parametrize("command", ["run", "routes"])
@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("tests._apps.hello", "MODULE:ATTRIBUTE"),
        (":app", "MODULE:ATTRIBUTE"),
        ("tests._apps.hello:", "MODULE:ATTRIBUTE"),
        ("tests._apps.nothing_here:app", "could not find module 'tests._apps.nothing_here'"),
        ("no_such_top_level_package.sub:app", "could not find module"),
        ("tests._apps.hello:missing", "has no attribute 'missing'"),
        ("tests._apps.hello:app.nope", "has no attribute 'app.nope'"),
        ("tests._apps.hello:not_an_app", "not an ASGI app"),
    ],
)
def test_a_bad_app_path_is_a_usage_error(runner: CliRunner, command: str, target: str, message: str) -> None:
    result = runner.invoke(main, [command, target])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", ["run", "routes"])
def test_a_module_that_fails_to_import_says_why(runner: CliRunner, command: str) -> None:
    result = runner.invoke(main, [command, "tests._apps.raises:app"])
    assert result.exit_code == 1
    assert "RuntimeError: this module is broken on purpose" in result.output
    missing = runner.invoke(main, [command, "tests._apps.needs_missing:app"])
    assert missing.exit_code == 1
    assert "wirehall_no_such_package_anywhere" in missing.output


def test_a_missing_dependency_whose_name_prefixes_the_module_is_not_reported_as_the_module(
    runner: CliRunner,
) -> None:
    result = runner.invoke(main, ["routes", "tests._apps.needs_sibling:app"])
    assert "could not find module 'tests._apps.needs_sibling'" not in result.output
    assert "tests._apps.needs'" in result.output
    assert result.exit_code == 1


def test_run_refuses_bad_options(runner: CliRunner) -> None:
    result = runner.invoke(main, ["run", "tests._apps.hello:app", "--port", "70000"])
    assert result.exit_code == 2
    assert "--port" in result.output
    result = runner.invoke(main, ["run", "tests._apps.hello:app", "--workers", "0"])
    assert result.exit_code == 2


def test_load_app_returns_the_attribute(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    from tests._apps import hello

    assert load_app("tests._apps.hello:app") is hello.app
    with pytest.raises(click.BadParameter):
        load_app("tests._apps.hello")


def test_help_lists_the_commands(runner: CliRunner) -> None:
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "run" in result.output
    assert "routes" in result.output


def _command() -> list[str]:
    script = Path(sys.executable).parent / "wirehall"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "wirehall.cli"]


def test_wirehall_run_serves_the_app(unused_port: int, tmp_path: Path) -> None:
    port = unused_port
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("WIREHALL_BACKPLANE", None)
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*_command(), "run", "tests._apps.hello:app", "--port", str(port), "--log-level", "warning"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        response = wait_until_serving(
            process, f"http://127.0.0.1:{port}/healthz", log=lambda: log_path.read_text(errors="replace")
        )
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}
        item = httpx.get(f"http://127.0.0.1:{port}/api/items/5", timeout=2)
        assert item.json() == {"id": 5}
    finally:
        stop_process(process, signal.SIGINT, 10)

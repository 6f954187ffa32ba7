"""The `wirehall` command: `routes` and `run` (with bad input; one real server as a smoke test)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
import httpx
import pytest
from click.testing import CliRunner

from tests._servers import stop_process, wait_until_serving
from tests.conftest import free_port
from wirehall import Route, Wirehall
from wirehall.cli import load_app, main
from wirehall.server.protocols import LimitedH11Protocol, LimitedHttpToolsProtocol

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.chdir(ROOT)
    # `wirehall run` hands its limits to the server's workers through the environment;
    # whatever a test's run sets there is undone after it, so later tests' apps never see it.
    for name in SERVER_ENV:
        monkeypatch.setenv(name, "")  # records the original (even "unset") for the undo
        monkeypatch.delenv(name)
    return CliRunner()


def test_routes_prints_the_table(runner: CliRunner) -> None:
    result = runner.invoke(main, ["routes", "tests._apps.hello:app"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["METHODS", "PATH", "NAME", "ENDPOINT"]
    rows = [line.split() for line in lines[1:]]
    assert ["GET", "/healthz", "health", "tests._apps.hello.health"] in rows
    assert ["DELETE,GET", "/api/items/{id:int}", "item", "tests._apps.hello.Items"] in rows
    # the API documents startup adds, by their names
    assert ["GET", "/openapi.json", "openapi", "wirehall.apidocs.pages.ApiDocs.openapi"] in rows
    assert {row[1] for row in rows} == {
        "/healthz",
        "/api/items/{id:int}",
        "/openapi.json",
        "/asyncapi.json",
        "/docs",
        "/docs/docs.js",
        "/docs/docs.css",
    }
    # columns line up
    assert len({line.index("/") for line in lines[1:]}) == 1
    assert len({line.index("tests._apps") for line in lines[1:3]} | {lines[3].index("wirehall.")}) == 1


def test_routes_shows_a_dash_for_an_unnamed_route(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests._apps import hello

    app = Wirehall(backplane="memory://", openapi_url=None, asyncapi_url=None, docs_url=None)
    app.add_routes([Route("/x", hello.health), Route("/y", hello.health)])  # the second name is taken
    monkeypatch.setattr(hello, "unnamed", app, raising=False)
    result = runner.invoke(main, ["routes", "tests._apps.hello:unnamed"])
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines()[1:]]
    assert rows == [
        ["GET", "/x", "health", "tests._apps.hello.health"],
        ["GET", "/y", "-", "tests._apps.hello.health"],
    ]


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


# what `wirehall run` gives uvicorn ------------------------------------------------------------

SERVER_ENV = ("WIREHALL_ALLOWED_HOSTS", "WIREHALL_MAX_HEAD_SIZE", "WIREHALL_HEAD_TIMEOUT")


@pytest.fixture
def uvicorn_run(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Capture the arguments `wirehall run` passes to uvicorn.run (and restore the environment it sets)."""
    import uvicorn

    for name in SERVER_ENV:
        monkeypatch.delenv(name, raising=False)
    captured: dict[str, Any] = {}

    def fake_run(app: str, **kwargs: Any) -> None:
        captured.update(kwargs, app=app, environ={name: os.environ.get(name) for name in SERVER_ENV})

    monkeypatch.setattr(uvicorn, "run", fake_run)
    return captured


def test_run_sizes_the_websocket_limit_from_the_app_routes(
    runner: CliRunner, uvicorn_run: dict[str, Any]
) -> None:
    result = runner.invoke(main, ["run", "tests.hostile._app:app"])
    assert result.exit_code == 0, result.output
    assert uvicorn_run["ws_max_size"] == 65536  # the Echo controller's max_message_size
    assert uvicorn_run["ws"] == "wirehall.server.websocket:WebSocketProtocol"  # the native path
    assert uvicorn_run["ws_per_message_deflate"] is True


@pytest.mark.parametrize("choice", ["websockets-sansio", "websockets", "auto"])
def test_run_serves_websockets_with_uvicorns_protocol_when_asked(
    runner: CliRunner, uvicorn_run: dict[str, Any], choice: str
) -> None:
    result = runner.invoke(main, ["run", "tests.hostile._app:app", "--ws", choice])
    assert result.exit_code == 0, result.output
    assert uvicorn_run["ws"] == choice


@pytest.mark.parametrize(
    ("package", "version"), [("uvicorn", "0.99.0"), ("websockets", "99.0"), ("uvicorn", "0.20.0")]
)
def test_run_refuses_the_native_protocol_on_untested_versions(
    runner: CliRunner,
    uvicorn_run: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    package: str,
    version: str,
) -> None:
    import uvicorn
    import websockets.version

    if package == "uvicorn":
        monkeypatch.setattr(uvicorn, "__version__", version)
    else:
        monkeypatch.setattr(websockets.version, "version", version)
    result = runner.invoke(main, ["run", "tests.hostile._app:app"])
    assert result.exit_code != 0
    assert f"{package} {version}" in result.output
    assert "--ws websockets-sansio" in result.output
    assert uvicorn_run == {}  # nothing was served
    # uvicorn's own protocol does not depend on them: it still starts
    result = runner.invoke(main, ["run", "tests.hostile._app:app", "--ws", "websockets-sansio"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("target", "options", "expected"),
    [
        ("tests._apps.hello:app", [], 1024 * 1024),  # no WebSocket route
        ("tests._apps.hello:plain_asgi", [], 1024 * 1024),  # cannot tell
        ("tests.hostile._app:app", ["--ws-max-size", "4096"], 4096),  # said explicitly
    ],
)
def test_run_websocket_limit_defaults_and_override(
    runner: CliRunner, uvicorn_run: dict[str, Any], target: str, options: list[str], expected: int
) -> None:
    result = runner.invoke(main, ["run", target, *options])
    assert result.exit_code == 0, result.output
    assert uvicorn_run["ws_max_size"] == expected


def test_max_websocket_message_size_is_the_largest_route_limit() -> None:
    from wirehall import WebSocketController, Wirehall

    class Small(WebSocketController):
        max_message_size = 1000

    class Large(WebSocketController):
        max_message_size = 5_000_000

    app = Wirehall(backplane="memory://")
    assert app.max_websocket_message_size == 1024 * 1024
    app.add_websocket_route("/small", Small)
    assert app.max_websocket_message_size == 1000
    sub = Wirehall(backplane="memory://")
    sub.add_websocket_route("/large", Large)
    app.mount("/sub", sub)
    assert app.max_websocket_message_size == 5_000_000

    async def function_endpoint(ws: Any) -> None:
        return None

    only_function = Wirehall(backplane="memory://")
    only_function.add_websocket_route("/f", function_endpoint)
    assert only_function.max_websocket_message_size == 1024 * 1024


def test_wsproto_runs_without_compression(runner: CliRunner, uvicorn_run: dict[str, Any]) -> None:
    result = runner.invoke(main, ["run", "tests.hostile._app:app", "--ws", "wsproto"])
    assert result.exit_code == 0, result.output
    assert uvicorn_run["ws"] == "wsproto"
    assert uvicorn_run["ws_per_message_deflate"] is False


@pytest.mark.parametrize(
    ("options", "protocol"),
    [([], LimitedHttpToolsProtocol), (["--http", "h11"], LimitedH11Protocol)],
)
def test_run_passes_head_limited_protocols_and_their_limits(
    runner: CliRunner, uvicorn_run: dict[str, Any], options: list[str], protocol: type
) -> None:
    result = runner.invoke(
        main, ["run", "tests._apps.hello:app", "--max-head-size", "8192", "--head-timeout", "2.5", *options]
    )
    assert result.exit_code == 0, result.output
    assert uvicorn_run["http"] is protocol
    assert uvicorn_run["h11_max_incomplete_event_size"] == 8192
    assert uvicorn_run["environ"]["WIREHALL_MAX_HEAD_SIZE"] == "8192"
    assert uvicorn_run["environ"]["WIREHALL_HEAD_TIMEOUT"] == "2.5"


def test_run_head_limits_have_defaults(runner: CliRunner, uvicorn_run: dict[str, Any]) -> None:
    result = runner.invoke(main, ["run", "tests._apps.hello:app"])
    assert result.exit_code == 0, result.output
    assert uvicorn_run["environ"]["WIREHALL_MAX_HEAD_SIZE"] == "16384"
    assert uvicorn_run["environ"]["WIREHALL_HEAD_TIMEOUT"] == "10.0"


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ([], "localhost,127.0.0.1,[::1]"),
        (["--host", "::1"], "localhost,127.0.0.1,[::1]"),
        (["--host", "localhost"], "localhost,127.0.0.1,[::1]"),
        (["--host", "0.0.0.0"], None),
        (
            ["--host", "0.0.0.0", "--allowed-host", "example.com", "--allowed-host", "*.example.org"],
            "example.com,*.example.org",
        ),
        (["--allowed-host", "*"], "*"),
    ],
)
def test_run_allowed_hosts(
    runner: CliRunner, uvicorn_run: dict[str, Any], options: list[str], expected: str | None
) -> None:
    result = runner.invoke(main, ["run", "tests._apps.hello:app", *options])
    assert result.exit_code == 0, result.output
    assert uvicorn_run["environ"]["WIREHALL_ALLOWED_HOSTS"] == expected


def test_run_keeps_allowed_hosts_from_the_environment(
    runner: CliRunner, uvicorn_run: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WIREHALL_ALLOWED_HOSTS", "chat.example.com")
    result = runner.invoke(main, ["run", "tests._apps.hello:app"])
    assert result.exit_code == 0, result.output
    assert uvicorn_run["environ"]["WIREHALL_ALLOWED_HOSTS"] == "chat.example.com"


@pytest.mark.parametrize("entry", ["https://example.com", "example.com:80"])
def test_run_refuses_a_bad_allowed_host(runner: CliRunner, uvicorn_run: dict[str, Any], entry: str) -> None:
    result = runner.invoke(main, ["run", "tests._apps.hello:app", "--allowed-host", entry])
    assert result.exit_code == 1
    assert "is not a host name" in result.output
    assert uvicorn_run == {}


def test_run_fails_clearly_when_uvicorn_lacks_what_the_protocols_need(
    runner: CliRunner, uvicorn_run: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from uvicorn.protocols.http.h11_impl import H11Protocol

    monkeypatch.delattr(H11Protocol, "handle_events")
    result = runner.invoke(main, ["run", "tests._apps.hello:app"])
    assert result.exit_code == 1
    assert "lacks H11Protocol.handle_events" in result.output
    assert uvicorn_run == {}


def test_run_log_config_redacts_on_every_handler(runner: CliRunner, uvicorn_run: dict[str, Any]) -> None:
    result = runner.invoke(main, ["run", "tests._apps.hello:app", "--redact-param", "session"])
    assert result.exit_code == 0, result.output
    config = uvicorn_run["log_config"]
    redact = config["filters"]["redact_query"]
    assert "session" in redact["names"]
    assert "token" in redact["names"]
    assert all("redact_query" in handler["filters"] for handler in config["handlers"].values())
    assert config["root"]["handlers"] == ["default"]


@pytest.mark.parametrize(
    ("options", "formatter", "level", "access_log"),
    [
        ([], "wirehall.server.logs.TextFormatter", "INFO", True),
        (
            ["--log-format", "json", "--log-level", "warning", "--no-access-log"],
            "wirehall.server.logs.JsonFormatter",
            "WARNING",
            False,
        ),
    ],
)
def test_run_log_options_reach_uvicorn(
    runner: CliRunner,
    uvicorn_run: dict[str, Any],
    options: list[str],
    formatter: str,
    level: str,
    access_log: bool,
) -> None:
    result = runner.invoke(main, ["run", "tests._apps.hello:app", *options])
    assert result.exit_code == 0, result.output
    config = uvicorn_run["log_config"]
    assert config["root"]["level"] == level  # the app's own loggers, and wirehall's
    assert config["formatters"][config["handlers"]["default"]["formatter"]]["()"] == formatter
    assert uvicorn_run["log_level"] == level.lower()
    assert uvicorn_run["access_log"] is access_log


def test_run_refuses_an_unknown_log_format(runner: CliRunner, uvicorn_run: dict[str, Any]) -> None:
    result = runner.invoke(main, ["run", "tests._apps.hello:app", "--log-format", "xml"])
    assert result.exit_code == 2
    assert "'xml' is not one of 'text', 'json'" in result.output
    assert uvicorn_run == {}


def test_run_help_documents_the_log_options(runner: CliRunner) -> None:
    result = runner.invoke(main, ["run", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for option in ("--log-level", "--log-format [text|json]", "--access-log / --no-access-log"):
        assert option in result.output
    assert "request_id" in result.output


# what `wirehall run` logs: a real server ------------------------------------------------------


def _log_lines(log: str, log_format: str) -> list[dict[str, Any]]:
    """Each log line as a dict: parsed JSON, or {"line": text} (the CLI's own notes are left out)."""
    lines = [line for line in log.splitlines() if line and not line.startswith("serving Host")]
    if log_format == "json":
        return [json.loads(line) for line in lines]
    return [{"line": line} for line in lines]


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_an_app_s_own_log_lines_appear_in_wirehall_run_output(tmp_path: Path, log_format: str) -> None:
    from tests.hostile._server import wirehall_run

    options = ("--log-format", log_format)
    with wirehall_run(
        free_port(), tmp_path / "server.log", *options, app="tests.server._logging_app:app"
    ) as server:
        response = httpx.get(f"{server.http_url}/orders/12", headers={"X-Request-ID": "req-12"}, timeout=5)
        assert response.json() == {"id": 12}
        deadline = time.monotonic() + 10
        while "order 12 looked up" not in server.log() and time.monotonic() < deadline:
            time.sleep(0.05)
    lines = _log_lines(server.log(), log_format)
    if log_format == "text":
        texts = [entry["line"] for entry in lines]
        assert "INFO:     myapp.orders: order 12 looked up" in texts
        # its 4 routes and the 5 of the API documents (openapi, asyncapi, docs and its 2 assets)
        assert "INFO:     wirehall.app: wirehall app started (9 routes)" in texts
        assert not any("debug detail" in text for text in texts)  # below --log-level info
        return
    (app_line,) = [entry for entry in lines if entry["logger"] == "myapp.orders"]
    assert app_line["message"] == "order 12 looked up"
    assert app_line["level"] == "INFO"
    assert (app_line["request_id"], app_line["route"], app_line["method"]) == (
        "req-12",
        "/orders/{order_id:int}",
        "GET",
    )
    (access,) = [
        entry for entry in lines if entry["logger"] == "uvicorn.access" and entry["path"] == "/orders/12"
    ]
    assert (access["request_id"], access["status"], access["route"]) == (
        "req-12",
        200,
        "/orders/{order_id:int}",
    )
    assert any(entry["logger"] == "wirehall.app" for entry in lines)

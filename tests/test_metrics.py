"""Prometheus metrics (`wirehall.metrics`): a scripted session, then `GET /metrics` parsed and counted."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from tests._servers import stop_process, wait_until_serving
from wirehall import HTTPError, WebSocketController, WebSocketService, Wirehall
from wirehall.backplane.memory import MemoryBackplane
from wirehall.cli import main
from wirehall.errors import ConfigurationError
from wirehall.events import RequestCompleted
from wirehall.metrics import METRICS_ENV, MULTIPROC_DIR_ENV, UNMATCHED_ROUTE, metrics_path_from_env
from wirehall.testing import TestClient
from wirehall.testing.websocket import WebSocketTestSession
from wirehall.websocket.codes import CloseCode

ROOT = Path(__file__).resolve().parent.parent

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition text: (name, labels) -> value."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


class Chat(WebSocketController):
    """Joins the room of its path; broadcasts what it receives, "bye" closes it with 4002."""

    async def on_connect(self, room: str) -> None:
        await self.accept()
        await self.join(room, "member")
        await self.send_json({"type": "ready"})

    async def on_message(self, message: str, room: str) -> None:
        if message == "bye":
            await self.close(4002, "asked to leave")
        else:
            await self.service.broadcast(room, message)


def make_app(**options: object) -> Wirehall:
    service = WebSocketService(MemoryBackplane(heartbeat_interval=0), max_queue=8)
    app = Wirehall(websockets=service, **options)  # type: ignore[arg-type]

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    @app.get("/items/{item_id:int}")
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    @app.get("/conflict")
    async def conflict() -> None:
        raise HTTPError(409, "taken")

    app.websocket("/ws/{room}")(Chat)
    return app


@contextlib.asynccontextmanager
async def ready(client: TestClient, path: str, **options: object) -> AsyncIterator[WebSocketTestSession]:
    """A session on `path` that received its "ready" (the connection joined its room)."""
    scope = client.websocket_scope(path)
    async with WebSocketTestSession(client.app, scope, timeout=5.0, **options) as ws:  # type: ignore[arg-type]
        assert (await ws.receive_json())["type"] == "ready"
        yield ws


async def test_metrics_are_off_by_default() -> None:
    async with TestClient(make_app(), websocket="asgi") as client:
        assert (await client.get("/metrics")).status_code == 404
        assert client.app.metrics is None  # type: ignore[attr-defined]
        assert client.app.websockets.metrics is None  # type: ignore[attr-defined]


@pytest.mark.usefixtures("websocket_path")
async def test_a_scripted_session_is_counted() -> None:
    app = make_app(metrics=True)
    service = app.websockets
    async with TestClient(app) as client:
        # HTTP: three routes, an error status and a path no route matches
        for _ in range(3):
            assert (await client.get("/hello")).status_code == 200
        assert (await client.get("/items/7")).status_code == 200
        assert (await client.get("/items/8")).status_code == 200
        assert (await client.get("/conflict")).status_code == 409
        assert (await client.get("/nowhere")).status_code == 404
        async with contextlib.AsyncExitStack() as stack:
            ann = await stack.enter_async_context(ready(client, "/ws/lobby"))
            bob = await stack.enter_async_context(ready(client, "/ws/lobby"))
            cat = await stack.enter_async_context(ready(client, "/ws/lobby"))
            # a message in, broadcast to the three members
            await ann.send_text("hello all")
            for ws in (ann, bob, cat):
                assert await ws.receive_text() == "hello all"
            for n in range(5):
                await service.broadcast("lobby", f"news {n}")
            for ws in (ann, bob, cat):
                assert [await ws.receive_text() for _ in range(5)] == [f"news {n}" for n in range(5)]
            # the backplane lost: the publish fails, the members here still get it; then it is back
            backplane = service.backplane
            assert isinstance(backplane, MemoryBackplane)
            backplane.cut_off()
            await service.broadcast("lobby", "during the outage")
            backplane.reconnect()
            for ws in (ann, bob, cat):
                assert await ws.receive_text() == "during the outage"
            # a second message in: the server closes that connection with 4002
            await cat.send_text("bye")
            assert await cat.receive_close() == 4002
            # a client closes with its own code
            await bob.close(4001)
            # a slow consumer alone in its room, evicted once more than max_queue (8) wait
            slow = await stack.enter_async_context(ready(client, "/ws/slowroom", buffer=2))
            handed = 0
            while "slowroom" in service.rooms():
                assert handed < 1000, "the slow consumer was never evicted"
                service.broadcast_local("slowroom", f"s{handed}")
                handed += 1
            with contextlib.suppress(Exception):
                while True:
                    await slow.receive_text()
            assert slow.close_code == CloseCode.TRY_AGAIN_LATER
            deadline = time.monotonic() + 5
            while service.connection_count > 1:  # bob's and cat's ends reach the service
                assert time.monotonic() < deadline, "closed connections are still registered"
                await asyncio.sleep(0.01)

            samples = parse((await client.get("/metrics")).text)

            # HTTP requests by route template, method and status, and their latency
            assert (
                value(samples, "wirehall_http_requests_total", route="/hello", method="GET", status="200")
                == 3
            )
            assert (
                value(
                    samples,
                    "wirehall_http_requests_total",
                    route="/items/{item_id:int}",
                    method="GET",
                    status="200",
                )
                == 2
            )
            assert (
                value(samples, "wirehall_http_requests_total", route="/conflict", method="GET", status="409")
                == 1
            )
            assert (
                value(
                    samples, "wirehall_http_requests_total", route=UNMATCHED_ROUTE, method="GET", status="404"
                )
                == 1
            )
            assert (
                value(samples, "wirehall_http_request_duration_seconds_count", route="/hello", method="GET")
                == 3
            )
            assert (
                value(samples, "wirehall_http_request_duration_seconds_sum", route="/hello", method="GET") > 0
            )
            assert (
                value(
                    samples,
                    "wirehall_http_request_duration_seconds_bucket",
                    route="/hello",
                    method="GET",
                    le="+Inf",
                )
                == 3
            )
            # WebSocket connections: open now, opened, closed by code, evicted
            assert value(samples, "wirehall_websocket_connections") == 1
            assert value(samples, "wirehall_websocket_connections_opened_total") == 4
            assert value(samples, "wirehall_websocket_connections_closed_total", code="4001") == 1
            assert value(samples, "wirehall_websocket_connections_closed_total", code="4002") == 1
            assert value(samples, "wirehall_websocket_connections_closed_total", code="1013") == 1
            assert value(samples, "wirehall_websocket_slow_consumer_evictions_total") == 1
            assert (
                value(samples, "wirehall_websocket_rooms") == 1
            )  # the lobby; the slow room went with its member
            # messages: in ("hello all" and "bye"), out (one per recipient of each broadcast)
            assert value(samples, "wirehall_websocket_messages_received_total") == 2
            broadcasts_to_three = 1 + 5 + 1
            assert (
                value(samples, "wirehall_websocket_messages_sent_total") == 3 * broadcasts_to_three + handed
            )
            assert (
                value(samples, "wirehall_websocket_broadcast_fanout_seconds_count")
                == broadcasts_to_three + handed
            )
            assert value(samples, "wirehall_websocket_outbox_messages") == 0
            assert value(samples, "wirehall_websocket_outbox_max_messages") == 0
            # the backplane
            assert value(samples, "wirehall_backplane_publish_errors_total") == 1
            assert value(samples, "wirehall_backplane_reconnects_total") == 1
            # the scrape itself is counted once it has been answered
            samples = parse((await client.get("/metrics")).text)
            assert (
                value(samples, "wirehall_http_requests_total", route="/metrics", method="GET", status="200")
                == 1
            )


async def test_enable_metrics_at_another_path_and_once_only() -> None:
    app = make_app()
    metrics = app.enable_metrics(path="/internal/metrics")
    assert app.enable_metrics(path="/internal/metrics") is metrics
    with pytest.raises(ConfigurationError, match="already"):
        app.enable_metrics(path="/metrics")
    async with TestClient(app, websocket="asgi") as client:
        response = await client.get("/internal/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        assert "# TYPE wirehall_http_requests_total counter" in response.text
        assert "/internal/metrics" not in (await client.get("/openapi.json")).json()["paths"]
    started = make_app()
    async with TestClient(started, websocket="asgi"):
        with pytest.raises(ConfigurationError, match="started"):
            started.enable_metrics()


async def test_the_environment_turns_metrics_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(METRICS_ENV, "/stats")
    app = make_app()
    async with TestClient(app, websocket="asgi") as client:
        assert (await client.get("/stats")).status_code == 200
        assert app.metrics is not None


@pytest.mark.parametrize(
    ("given", "path"),
    [("", None), ("0", None), ("off", None), ("1", "/metrics"), ("true", "/metrics"), ("/m", "/m")],
)
def test_metrics_path_from_env(given: str, path: str | None) -> None:
    assert metrics_path_from_env({METRICS_ENV: given}) == path


def test_a_bad_metrics_env_value_says_what_to_use() -> None:
    with pytest.raises(ConfigurationError, match="use 1"):
        metrics_path_from_env({METRICS_ENV: "metrics"})


def _command() -> list[str]:
    script = Path(sys.executable).with_name("wirehall")
    return [str(script)] if script.exists() else [sys.executable, "-m", "wirehall.cli"]


def test_wirehall_run_metrics_sums_every_worker(unused_port: int, tmp_path: Path) -> None:
    port = unused_port
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name in ("WIREHALL_BACKPLANE", METRICS_ENV, "PROMETHEUS_MULTIPROC_DIR"):
        env.pop(name, None)
    log_path = tmp_path / "server.log"
    command = [*_command(), "run", "tests._apps.metrics_app:app", "--port", str(port)]
    command += ["--workers", "2", "--metrics", "--log-level", "warning", "--no-access-log"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(process, f"{base}/metrics", log=lambda: log_path.read_text(errors="replace"))
        pids: set[int] = set()
        requests = 0
        # a fresh connection each time, so that either worker may accept it
        while len(pids) < 2:
            assert requests < 400, f"one worker answered all {requests} requests"
            pids.add(httpx.get(f"{base}/pid", timeout=5).json()["pid"])
            requests += 1
        # a worker folds its counts in at each scrape it answers and once a second otherwise
        deadline = time.monotonic() + 10
        while True:
            samples = parse(httpx.get(f"{base}/metrics", timeout=5).text)
            counted = value(samples, "wirehall_http_requests_total", route="/pid", method="GET", status="200")
            if counted == requests or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert counted == requests
        assert (
            value(samples, "wirehall_http_request_duration_seconds_count", route="/pid", method="GET")
            == requests
        )
        assert value(samples, "wirehall_websocket_connections") == 0
    finally:
        assert stop_process(process, signal.SIGINT, 15) is not None
    assert "Traceback" not in log_path.read_text(errors="replace")


async def test_requests_are_counted_when_the_app_observes_them_too() -> None:
    app = make_app(metrics=True)
    seen: list[RequestCompleted] = []
    app.events.subscribe(RequestCompleted, seen.append)
    async with TestClient(app, websocket="asgi") as client:
        await client.get("/hello")
        await client.get("/conflict")
        samples = parse((await client.get("/metrics")).text)
    assert [(event.route, event.status) for event in seen][:2] == [("/hello", 200), ("/conflict", 409)]
    assert value(samples, "wirehall_http_requests_total", route="/hello", method="GET", status="200") == 1
    assert value(samples, "wirehall_http_requests_total", route="/conflict", method="GET", status="409") == 1


async def test_an_unknown_method_is_counted_as_other() -> None:
    async with TestClient(make_app(metrics=True), websocket="asgi") as client:
        for method in ("BREW", "WHEN", "BREW"):
            assert (await client.request(method, "/nowhere")).status_code in (404, 405)
        samples = parse((await client.get("/metrics")).text)
    methods = {dict(labels)["method"] for name, labels in samples if name == "wirehall_http_requests_total"}
    assert methods == {"other"}
    assert (
        value(samples, "wirehall_http_requests_total", route=UNMATCHED_ROUTE, method="other", status="404")
        == 3
    )


def test_run_with_metrics_and_workers_shares_a_directory_it_removes_afterwards(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import uvicorn

    # `wirehall run` sets these for its workers: set first so that they are put back afterwards
    for name in (METRICS_ENV, MULTIPROC_DIR_ENV, "WIREHALL_ALLOWED_HOSTS", "WIREHALL_BACKPLANE"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    seen: dict[str, Any] = {}

    def fake_run(app: str, **options: Any) -> None:
        directory = os.environ[MULTIPROC_DIR_ENV]
        seen.update(
            options, directory=directory, exists=os.path.isdir(directory), metrics=os.environ[METRICS_ENV]
        )

    monkeypatch.setattr(uvicorn, "run", fake_run)
    result = CliRunner().invoke(main, ["run", "tests._apps.metrics_app:app", "--workers", "2", "--metrics"])
    assert result.exit_code == 0, result.output
    assert seen["workers"] == 2
    assert seen["exists"] is True
    assert seen["metrics"] == "1"
    assert not os.path.exists(seen["directory"])
    monkeypatch.undo()
    assert MULTIPROC_DIR_ENV not in os.environ
    assert METRICS_ENV not in os.environ

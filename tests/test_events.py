from __future__ import annotations

import asyncio
import logging
from dataclasses import FrozenInstanceError, dataclass
from typing import Any

import pytest

from wirehall import HTTPError, Wirehall
from wirehall.events import (
    ErrorRaised,
    Event,
    EventBus,
    RequestCompleted,
    RequestStarted,
    WebSocketConnected,
)
from wirehall.testing.client import TestClient


@dataclass(frozen=True, slots=True)
class RoomCreated(Event):
    room: str


@dataclass(frozen=True, slots=True)
class PrivateRoomCreated(RoomCreated):
    owner: str


async def test_sync_and_async_subscribers_get_the_event_in_order() -> None:
    bus = EventBus()
    seen: list[str] = []

    def sync_subscriber(event: RoomCreated) -> None:
        seen.append(f"sync {event.room}")

    async def async_subscriber(event: RoomCreated) -> None:
        await asyncio.sleep(0)
        seen.append(f"async {event.room}")

    bus.subscribe(RoomCreated, sync_subscriber)
    bus.subscribe(RoomCreated, async_subscriber)
    await bus.publish(RoomCreated("lobby"))
    assert seen == ["sync lobby", "async lobby"]


async def test_subscribers_of_a_base_class_get_subclass_events() -> None:
    bus = EventBus()
    base: list[Event] = []
    exact: list[Event] = []
    everything: list[Event] = []
    bus.subscribe(RoomCreated, base.append)
    bus.subscribe(PrivateRoomCreated, exact.append)
    bus.subscribe(Event, everything.append)
    await bus.publish(PrivateRoomCreated("vip", owner="ann"))
    await bus.publish(RoomCreated("lobby"))
    assert base == [PrivateRoomCreated("vip", "ann"), RoomCreated("lobby")]
    assert exact == [PrivateRoomCreated("vip", "ann")]
    assert len(everything) == 2


async def test_unrelated_events_are_not_delivered() -> None:
    bus = EventBus()
    seen: list[Event] = []
    bus.subscribe(RequestStarted, seen.append)
    await bus.publish(RoomCreated("lobby"))
    await bus.publish(WebSocketConnected("c1", "/ws"))
    assert seen == []


async def test_a_failing_subscriber_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = EventBus()
    seen: list[str] = []

    def broken(event: RoomCreated) -> None:
        raise ValueError("subscriber exploded")

    async def broken_async(event: RoomCreated) -> None:
        raise RuntimeError("async subscriber exploded")

    bus.subscribe(RoomCreated, broken)
    bus.subscribe(RoomCreated, broken_async)
    bus.subscribe(RoomCreated, lambda event: seen.append(event.room))
    with caplog.at_level(logging.ERROR, logger="wirehall.events"):
        await bus.publish(RoomCreated("lobby"))
    assert seen == ["lobby"]
    messages = [r for r in caplog.records if r.name == "wirehall.events"]
    assert len(messages) == 2
    assert all(r.exc_info is not None for r in messages)
    assert "subscriber exploded" in caplog.text
    assert "async subscriber exploded" in caplog.text


async def test_unsubscribe_and_decorator_form() -> None:
    bus = EventBus()
    seen: list[str] = []

    @bus.on(RoomCreated)
    def remember(event: RoomCreated) -> None:
        seen.append(event.room)

    await bus.publish(RoomCreated("a"))
    bus.unsubscribe(RoomCreated, remember)
    bus.unsubscribe(RoomCreated, remember)  # twice is fine
    await bus.publish(RoomCreated("b"))
    assert seen == ["a"]


async def test_wants_follows_subscriptions_including_base_classes() -> None:
    bus = EventBus()
    assert not bus.wants(RoomCreated)
    assert not bus.wants(PrivateRoomCreated)
    subscriber = bus.on(RoomCreated)(lambda event: None)
    assert bus.wants(RoomCreated)
    assert bus.wants(PrivateRoomCreated)
    assert not bus.wants(RequestCompleted)
    bus.unsubscribe(RoomCreated, subscriber)
    assert not bus.wants(PrivateRoomCreated)


def test_watchers_hear_of_every_change_of_subscriptions() -> None:
    bus = EventBus()
    versions: list[int] = []
    bus.watch(lambda: versions.append(bus.version))
    subscriber = bus.on(RoomCreated)(lambda event: None)
    bus.unsubscribe(RoomCreated, subscriber)
    bus.unsubscribe(RoomCreated, subscriber)  # not subscribed: nothing changed
    assert versions == [1, 2]


async def test_subscribing_after_a_publish_is_seen_by_the_next_publish() -> None:
    bus = EventBus()
    first: list[Event] = []
    second: list[Event] = []
    bus.subscribe(RoomCreated, first.append)
    await bus.publish(PrivateRoomCreated("x", "ann"))
    bus.subscribe(Event, second.append)
    await bus.publish(PrivateRoomCreated("y", "bob"))
    assert len(first) == 2
    assert second == [PrivateRoomCreated("y", "bob")]


async def test_publish_nowait_runs_subscribers_in_a_task() -> None:
    bus = EventBus()
    done = asyncio.Event()
    seen: list[str] = []

    async def subscriber(event: RoomCreated) -> None:
        seen.append(event.room)
        done.set()

    bus.subscribe(RoomCreated, subscriber)
    bus.publish_nowait(RoomCreated("lobby"))
    assert seen == []
    await asyncio.wait_for(done.wait(), timeout=2)
    assert seen == ["lobby"]


async def test_publish_nowait_without_subscribers_does_nothing() -> None:
    bus = EventBus()
    bus.publish_nowait(RoomCreated("lobby"))
    assert not bus._tasks


def test_events_are_frozen() -> None:
    event = RequestCompleted("GET", "/", 200, 0.1)
    with pytest.raises(FrozenInstanceError):
        event.status = 500  # type: ignore[misc]


def test_error_raised_carries_the_exception() -> None:
    error = ValueError("x")
    event = ErrorRaised(error, "/p", "http")
    assert event.error is error
    assert (event.path, event.kind) == ("/p", "http")


# around requests -------------------------------------------------------------


def new_app(**options: Any) -> Wirehall:
    options.setdefault("backplane", "memory://")
    return Wirehall(**options)


def app_with_routes() -> Wirehall:
    app = new_app()

    @app.get("/ok/{id:int}")
    async def ok(id: int) -> dict[str, int]:
        await asyncio.sleep(0.01)
        return {"id": id}

    @app.get("/teapot")
    async def teapot() -> str:
        raise HTTPError(418, "short and stout")

    @app.get("/boom")
    async def boom() -> str:
        raise ValueError("kaboom")

    return app


async def test_request_started_and_completed_around_every_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = app_with_routes()
    seen: list[Event] = []
    app.events.subscribe(RequestStarted, seen.append)
    app.events.subscribe(RequestCompleted, seen.append)
    with caplog.at_level(logging.CRITICAL):
        async with TestClient(app) as client:
            await client.get("/ok/1")
            await client.get("/teapot")
            await client.get("/boom")
    assert [type(e).__name__ for e in seen] == ["RequestStarted", "RequestCompleted"] * 3
    started = [e for e in seen if isinstance(e, RequestStarted)]
    completed = [e for e in seen if isinstance(e, RequestCompleted)]
    assert [(e.method, e.path) for e in started] == [("GET", "/ok/1"), ("GET", "/teapot"), ("GET", "/boom")]
    assert [(e.path, e.status) for e in completed] == [("/ok/1", 200), ("/teapot", 418), ("/boom", 500)]
    assert completed[0].duration >= 0.01
    assert all(0 <= e.duration < 5 for e in completed)


async def test_request_events_also_cover_unmatched_requests() -> None:
    app = app_with_routes()
    completed: list[RequestCompleted] = []
    app.events.subscribe(RequestCompleted, completed.append)
    async with TestClient(app) as client:
        await client.get("/nowhere")
        await client.post("/teapot")
    assert [(e.path, e.status) for e in completed] == [("/nowhere", 404), ("/teapot", 405)]


async def test_subscribing_while_serving_takes_effect() -> None:
    app = app_with_routes()
    completed: list[RequestCompleted] = []
    async with TestClient(app) as client:
        await client.get("/ok/1")
        app.events.subscribe(RequestCompleted, completed.append)
        await client.get("/ok/2")
        app.events.unsubscribe(RequestCompleted, completed.append)
        await client.get("/ok/3")
    assert [e.path for e in completed] == ["/ok/2"]


async def test_a_failing_request_subscriber_never_breaks_the_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = app_with_routes()

    def broken(event: Event) -> None:
        raise RuntimeError("subscriber bug")

    async def broken_async(event: Event) -> None:
        raise RuntimeError("async subscriber bug")

    app.events.subscribe(RequestStarted, broken)
    app.events.subscribe(RequestCompleted, broken_async)
    app.events.subscribe(ErrorRaised, broken)
    with caplog.at_level(logging.ERROR, logger="wirehall.events"):
        async with TestClient(app) as client:
            ok = await client.get("/ok/5")
            crash = await client.get("/boom")
    assert (ok.status_code, ok.json()) == (200, {"id": 5})
    assert crash.status_code == 500
    assert crash.json() == {"error": "Internal Server Error"}
    assert "subscriber bug" in caplog.text
    assert "async subscriber bug" in caplog.text


async def test_error_raised_is_published_for_crashes_only(caplog: pytest.LogCaptureFixture) -> None:
    app = app_with_routes()
    errors: list[ErrorRaised] = []
    app.events.subscribe(ErrorRaised, errors.append)
    with caplog.at_level(logging.CRITICAL):
        async with TestClient(app) as client:
            await client.get("/teapot")
            await client.get("/ok/1")
            await client.get("/boom")
    assert len(errors) == 1
    assert isinstance(errors[0].error, ValueError)
    assert str(errors[0].error) == "kaboom"
    assert errors[0].path == "/boom"
    assert errors[0].kind == "http"

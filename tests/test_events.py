from __future__ import annotations

import asyncio
import logging
from dataclasses import FrozenInstanceError, dataclass

import pytest

from wirehall.events import (
    ErrorRaised,
    Event,
    EventBus,
    RequestCompleted,
    RequestStarted,
    WebSocketConnected,
)


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

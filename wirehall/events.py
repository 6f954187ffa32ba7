"""Typed events and the bus that dispatches them by type.

Events are small frozen dataclasses. A subscriber receives every event that is an
instance of the type it subscribed to (subclasses included). A subscriber that
raises is logged and the others still run; publishing never raises.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = [
    "AppStarted",
    "AppStopping",
    "DeliveryInterrupted",
    "ErrorRaised",
    "Event",
    "EventBus",
    "PresenceChanged",
    "PresenceDiff",
    "RequestCompleted",
    "RequestStarted",
    "WebSocketConnected",
    "WebSocketDisconnected",
    "WebSocketMessageReceived",
]

logger = logging.getLogger(__name__)

E = TypeVar("E", bound="Event")
Subscriber = Callable[[Any], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class Event:
    """Base class of all events; subclass it (as a frozen dataclass) for custom ones."""


@dataclass(frozen=True, slots=True)
class AppStarted(Event):
    """The app finished its startup."""


@dataclass(frozen=True, slots=True)
class AppStopping(Event):
    """The app is about to shut down."""


@dataclass(frozen=True, slots=True)
class RequestStarted(Event):
    """An HTTP request arrived."""

    method: str
    path: str


@dataclass(frozen=True, slots=True)
class RequestCompleted(Event):
    """An HTTP request was answered."""

    method: str
    path: str
    status: int
    duration: float
    route: str | None = None
    """The matched route's path template (`/items/{id}`); None when no route matched."""


@dataclass(frozen=True, slots=True)
class ErrorRaised(Event):
    """User code raised an exception that was not an `HTTPError` / `WebSocketError`."""

    error: BaseException
    path: str
    kind: str  # "http", "websocket" or "lifespan"


@dataclass(frozen=True, slots=True)
class WebSocketConnected(Event):
    """A WebSocket handshake was accepted."""

    connection_id: str
    path: str


@dataclass(frozen=True, slots=True)
class WebSocketMessageReceived(Event):
    """A WebSocket message arrived (published only when somebody subscribes)."""

    connection_id: str
    path: str
    size: int


@dataclass(frozen=True, slots=True)
class WebSocketDisconnected(Event):
    """A WebSocket connection ended with `code`."""

    connection_id: str
    path: str
    code: int


@dataclass(frozen=True, slots=True)
class DeliveryInterrupted(Event):
    """This process lost the backplane for a while and has it back.

    Broadcasts from other processes to `rooms` (the rooms with members here) may have been
    missed meanwhile. Positioned broadcasts are caught up by the service itself when the app
    gave it a replay source (`WebSocketService.replay_from`); for anything else, catch the
    clients up from the app's own history, or close them so that they reconnect.
    """

    rooms: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PresenceChanged(Event):
    """Somebody joined or left `room`, or a dead process's members were purged from it.

    Published on the process where the change happened (for a purge: the one process that
    purged), not on every process, once per change: to tell a room who is there, use
    `PresenceDiff`, which is coalesced and published on every process.
    """

    room: str


@dataclass(frozen=True, slots=True)
class PresenceDiff(Event):
    """Who joined and who left `room` since its last `PresenceDiff` on this process.

    `joined` and `left` are `{member_id: identity}` (Phoenix-style). Published on every
    process with members in the room (send to them with `WebSocketService.broadcast_local`),
    at most once per `presence_interval` seconds per room, the first change after a quiet
    spell at once. A room's diffs compose: the first one on a process joins everybody
    already there, and once the process's last member leaves, one leaves everybody; applied
    in order to an empty room, they give its members on every process.
    """

    room: str
    joined: Mapping[str, str]
    left: Mapping[str, str]


class EventBus:
    """Dispatches events to subscribers by type. One per app; never global."""

    def __init__(self) -> None:
        self._subscribers: dict[type[Event], list[Subscriber]] = {}
        self._cache: dict[type[Event], tuple[Subscriber, ...]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.version = 0  # changes with every (un)subscription, so callers can cache `wants`
        self._watchers: list[Callable[[], None]] = []

    def watch(self, callback: Callable[[], None]) -> None:
        """Call `callback` after every (un)subscription: for a cache of `wants` that is not
        asked again on each use (the app's `_watch_requests`)."""
        self._watchers.append(callback)

    def _changed(self) -> None:
        self._cache.clear()
        self.version += 1
        for callback in self._watchers:
            callback()

    def subscribe(self, event_type: type[E], subscriber: Callable[[E], Awaitable[None] | None]) -> None:
        """Call `subscriber` (sync or async) with every event of `event_type`."""
        self._subscribers.setdefault(event_type, []).append(subscriber)
        self._changed()

    def unsubscribe(self, event_type: type[E], subscriber: Callable[[E], Awaitable[None] | None]) -> None:
        """Stop calling `subscriber` for `event_type` (no error when it was not subscribed)."""
        subscribers = self._subscribers.get(event_type, [])
        if subscriber in subscribers:
            subscribers.remove(subscriber)
            self._changed()

    def on(self, event_type: type[E]) -> Callable[[Callable[[E], Any]], Callable[[E], Any]]:
        """Decorator form of `subscribe`."""

        def decorator(subscriber: Callable[[E], Any]) -> Callable[[E], Any]:
            self.subscribe(event_type, subscriber)
            return subscriber

        return decorator

    def _for(self, event_type: type[Event]) -> tuple[Subscriber, ...]:
        found = self._cache.get(event_type)
        if found is None:
            found = tuple(
                subscriber for base in event_type.__mro__ for subscriber in self._subscribers.get(base, ())
            )
            self._cache[event_type] = found
        return found

    def wants(self, event_type: type[Event]) -> bool:
        """Whether anybody listens for `event_type` (lets hot paths skip building events)."""
        return bool(self._for(event_type))

    async def publish(self, event: Event) -> None:
        """Run every subscriber for `event`, in order of subscription; failures are logged."""
        for subscriber in self._for(type(event)):
            try:
                result = subscriber(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("event subscriber %r failed on %r", subscriber, event)

    def publish_nowait(self, event: Event) -> None:
        """Publish from synchronous code: subscribers run in a task of their own."""
        if not self._for(type(event)):
            return
        task = asyncio.get_running_loop().create_task(self.publish(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

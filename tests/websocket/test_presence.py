"""Presence as diffs: the PresenceBook's logic (no sockets), then PresenceDiff across services."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest

from tests.websocket._support import Member, endpoint_app, eventually, member, session
from wirehall.backplane.memory import MemoryBackplane, MemoryHub
from wirehall.events import EventBus, PresenceDiff
from wirehall.types import ASGIApp
from wirehall.websocket import WebSocketController, WebSocketService
from wirehall.websocket._presence import PresenceBook, PresenceNotice, decode_notice, encode_notice


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def loaded(book: PresenceBook, room: str, snapshot: dict[str, str]) -> None:
    token = book.follow(room)
    assert token is not None
    assert book.load(room, token, snapshot)


def announce(book: PresenceBook, room: str) -> tuple[dict[str, str], dict[str, str]] | None:
    """Fire the armed timer at once and finish the announcement."""
    diff = book.take(room)
    book.announced(room)
    return diff


def test_first_announcement_joins_everyone_already_there_and_is_due_at_once() -> None:
    book = PresenceBook(0.25, Clock())
    loaded(book, "lobby", {"n1.1": "ann", "n2.1": "bob"})
    assert book.due("lobby") == 0.0
    assert announce(book, "lobby") == ({"n1.1": "ann", "n2.1": "bob"}, {})


def test_changes_close_together_are_one_net_diff_after_the_interval() -> None:
    clock = Clock()
    book = PresenceBook(0.25, clock)
    loaded(book, "lobby", {"a": "ann", "b": "bob"})
    announce(book, "lobby")
    clock.now += 0.1
    book.change("lobby", {"c": "cy"})
    assert book.due("lobby") == pytest.approx(0.15)
    assert book.due("lobby") is None  # armed already
    book.change("lobby", {"d": "dee"})
    book.change("lobby", left=["b"])
    book.change("lobby", left=["d"])  # joined and left within the interval: not announced
    clock.now += 0.15
    assert announce(book, "lobby") == ({"c": "cy"}, {"b": "bob"})
    assert book.members("lobby") == {"a": "ann", "c": "cy"}


def test_a_crowded_room_is_announced_less_often_in_proportion_to_its_size() -> None:
    clock = Clock()
    book = PresenceBook(0.25, clock, crowd=10)
    loaded(book, "hall", {f"m{n}": "x" for n in range(40)})
    announce(book, "hall")
    book.change("hall", {"late": "y"})
    assert book.due("hall") == pytest.approx(0.25 * 41 / 10)


def test_nothing_is_announced_when_changes_cancel_out() -> None:
    book = PresenceBook(0.25, Clock())
    loaded(book, "lobby", {"a": "ann"})
    announce(book, "lobby")
    book.change("lobby", left=["a"])
    book.change("lobby", {"a": "ann"})
    assert book.due("lobby") is None


def test_a_new_identity_for_a_member_is_a_leave_and_a_join() -> None:
    book = PresenceBook(0.25, Clock())
    loaded(book, "lobby", {"a": "ann"})
    announce(book, "lobby")
    book.change("lobby", {"a": "anne"})
    book.due("lobby")
    assert announce(book, "lobby") == ({"a": "anne"}, {"a": "ann"})


def test_no_announcement_is_armed_while_one_is_being_made() -> None:
    clock = Clock()
    book = PresenceBook(0.25, clock)
    loaded(book, "lobby", {"a": "ann"})
    book.due("lobby")
    assert book.take("lobby") == ({"a": "ann"}, {})
    book.change("lobby", {"b": "bob"})
    assert book.due("lobby") is None
    clock.now += 0.3  # the announcement took longer than the interval
    book.announced("lobby")
    assert book.due("lobby") == 0.0


def test_changes_during_a_snapshot_read_are_applied_after_it() -> None:
    book = PresenceBook(0.25, Clock())
    token = book.follow("lobby")
    assert token is not None
    book.change("lobby", {"b": "bob"})  # after the read began: maybe not in the snapshot
    book.change("lobby", left=["a"])
    assert book.due("lobby") is None  # waits for the snapshot
    assert book.load("lobby", token, {"a": "ann"})
    assert book.members("lobby") == {"b": "bob"}
    book.due("lobby")
    assert announce(book, "lobby") == ({"b": "bob"}, {})


def test_a_fresh_snapshot_turns_purged_members_into_leaves() -> None:
    book = PresenceBook(0.25, Clock())
    loaded(book, "lobby", {"dead.1": "ann", "live.1": "bob"})
    announce(book, "lobby")
    book.change("lobby", {"dead.2": "cy"})  # before the resync: the new read shows it gone
    first = book.begin_load("lobby")
    second = book.begin_load("lobby")
    assert first is not None
    assert second is not None
    book.change("lobby", {"live.2": "dee"})
    assert not book.load("lobby", first, {"dead.1": "ann", "live.1": "bob"})  # older read: ignored
    assert book.load("lobby", second, {"live.1": "bob"})
    book.due("lobby")
    assert announce(book, "lobby") == ({"live.2": "dee"}, {"dead.1": "ann"})


def test_unfollowing_leaves_everybody_then_forgets_the_room() -> None:
    book = PresenceBook(0.25, Clock())
    loaded(book, "lobby", {"a": "ann", "b": "bob"})
    announce(book, "lobby")
    book.change("lobby", {"c": "cy"})
    book.unfollow("lobby")
    assert "lobby" not in book
    book.change("lobby", {"d": "dee"})  # not followed: ignored
    book.due("lobby")
    assert announce(book, "lobby") == ({}, {"a": "ann", "b": "bob"})
    assert book.rooms() == []
    assert book.due("lobby") is None


def test_following_again_before_the_last_leave_is_announced_nets_out() -> None:
    book = PresenceBook(0.25, Clock())
    loaded(book, "lobby", {"a": "ann"})
    announce(book, "lobby")
    book.unfollow("lobby")
    loaded(book, "lobby", {"a": "ann", "b": "bob"})
    book.due("lobby")
    assert announce(book, "lobby") == ({"b": "bob"}, {})


def test_a_notice_survives_the_backplane_encoding() -> None:
    notice = PresenceNotice(joined={"n.1": "ann"}, left=("n.2",))
    assert decode_notice(encode_notice(notice)) == notice
    assert decode_notice(encode_notice(PresenceNotice(resync=True))).resync


def test_a_negative_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="presence_interval"):
        PresenceBook(-1, Clock())
    with pytest.raises(ValueError, match="presence_crowd"):
        PresenceBook(0.25, Clock(), crowd=0)


# ---- PresenceDiff from the service, across nodes ------------------------------------------


class Purging(MemoryBackplane):
    """A memory backplane whose heartbeat can report rooms purged of a dead node's members."""

    def __init__(self, hub: MemoryHub) -> None:
        super().__init__(hub)
        self.purged: list[str] = []

    async def heartbeat(self) -> list[str]:
        purged, self.purged = self.purged, []
        return purged


class Node:
    """A service on a shared memory hub, its PresenceDiff events and the room they add up to."""

    def __init__(self, hub: MemoryHub, interval: float = 0.05) -> None:
        self.events = EventBus()
        self.backplane = Purging(hub)
        self.service = WebSocketService(
            self.backplane, events=self.events, heartbeat_interval=0.01, presence_interval=interval
        )
        self.diffs: list[PresenceDiff] = []
        self.view: dict[str, dict[str, str]] = {}
        self.events.subscribe(PresenceDiff, self.record)
        self.app: ASGIApp = endpoint_app(Member, self.service, self.events)

    def record(self, diff: PresenceDiff) -> None:
        self.diffs.append(diff)
        room = self.view.setdefault(diff.room, {})
        for member_id in diff.left:
            del room[member_id]  # a diff never leaves somebody who had not joined
        room.update(diff.joined)


@pytest.fixture
async def nodes() -> AsyncIterator[tuple[Node, Node]]:
    hub = MemoryHub()
    first, second = Node(hub), Node(hub)
    await first.service.start()
    await second.service.start()
    yield first, second
    await first.service.stop()
    await second.service.stop()


@pytest.fixture
async def stack() -> AsyncIterator[contextlib.AsyncExitStack]:
    async with contextlib.AsyncExitStack() as stack:
        yield stack


@pytest.mark.usefixtures("websocket_path")
async def test_every_node_with_members_gets_diffs_that_add_up_to_the_room(
    nodes: tuple[Node, Node], stack: contextlib.AsyncExitStack
) -> None:
    first, second = nodes
    _, ann = await member(stack, first.app, "lobby", "ann")
    _, bob = await member(stack, second.app, "lobby", "bob")
    everyone = {ann: "ann", bob: "bob"}
    await eventually(lambda: first.view.get("lobby") == everyone == second.view.get("lobby"))
    assert await first.service.presence("lobby") == everyone


@pytest.mark.usefixtures("websocket_path")
async def test_many_joins_close_together_are_a_few_diffs(
    nodes: tuple[Node, Node], stack: contextlib.AsyncExitStack
) -> None:
    first, second = nodes
    first.service._presence.interval = 0.3  # wide enough for the joins below to fall in two
    _, ann = await member(stack, first.app, "lobby", "ann")
    ids = [ann]
    for n in range(20):
        _, member_id = await member(stack, second.app, "lobby", f"u{n}")
        ids.append(member_id)
    await eventually(lambda: set(first.view.get("lobby", {})) == set(ids))
    assert len(first.diffs) < 10
    assert sum(len(diff.joined) for diff in first.diffs) == len(ids)  # net changes: nobody twice


@pytest.mark.usefixtures("websocket_path")
async def test_purges_are_diffs_and_the_last_member_leaving_leaves_everybody(
    nodes: tuple[Node, Node], stack: contextlib.AsyncExitStack
) -> None:
    first, second = nodes
    ann_ws, ann = await member(stack, first.app, "lobby", "ann")
    _, bob = await member(stack, second.app, "lobby", "bob")
    _, cy = await member(stack, second.app, "lobby", "cy")
    await eventually(lambda: first.view.get("lobby") == {ann: "ann", bob: "bob", cy: "cy"})
    # as if cy's node had died: gone from the backplane with no notice, reported by a heartbeat
    await second.backplane.remove_presence("lobby", cy)
    first.backplane.purged.append("lobby")
    await eventually(lambda: first.view.get("lobby") == {ann: "ann", bob: "bob"})
    await eventually(lambda: second.view.get("lobby") == {ann: "ann", bob: "bob"})
    await ann_ws.close()
    await eventually(lambda: first.view.get("lobby") == {})  # bob too, as nobody here follows it
    assert first.service.presence_interval == 0.05
    assert first.diffs[-1].left == {ann: "ann", bob: "bob"}


class Held(WebSocketController):
    """Joins `lobby` holding its messages, until it is told `release`."""

    receives = "text"

    async def on_connect(self) -> None:
        await self.accept()
        await self.join("lobby", "held", hold=True)
        await self.send_json({"type": "ready", "id": self.id})

    async def on_message(self, message: str) -> None:
        self.release("lobby")


@pytest.mark.usefixtures("websocket_path")
async def test_broadcast_local_reaches_this_node_only_and_held_members_on_release(
    nodes: tuple[Node, Node], stack: contextlib.AsyncExitStack
) -> None:
    first, second = nodes
    here, _ = await member(stack, first.app, "lobby", "ann")
    there, _ = await member(stack, second.app, "lobby", "bob")
    held = await stack.enter_async_context(session(endpoint_app(Held, first.service, first.events)))
    assert (await held.receive_json())["type"] == "ready"
    first.service.broadcast_local("lobby", {"local": 1})
    assert await here.receive_json() == {"local": 1}
    await second.service.broadcast("lobby", "probe")  # ordered after anything sent before it
    assert await there.receive_text() == "probe"
    await held.send_text("release")
    assert await held.receive_json() == {"local": 1}

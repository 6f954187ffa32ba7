"""Presence as diffs: each room's members as this process sees them, and coalesced changes.

A process follows a room while it has members there. It starts from one read of the
room's presence (a snapshot), then applies the changes every node announces on the
room's channel: a member's changes come from its own node, in order, so a snapshot taken
after subscribing plus every change received after it gives the room exactly. Changes
that arrive while a snapshot is being read are kept and applied after it; a node that may
have missed changes (a purge of a dead node, a backplane outage) reads a fresh snapshot
and the difference becomes changes too.

Changes are not announced one by one: a room's net change since its last announcement
(who joined, who left, `{member: identity}` each) is announced at most once per
`interval` seconds, the first change after a quiet spell at once. A room of more than
`crowd` members is announced proportionally less often (every `interval * members / crowd`
seconds): an app that sends each member the whole list on each announcement then sends a
member at most `crowd / interval` names a second, however large the room, instead of a
cost that grows with the square of the room's size. Announcements of one
room compose: applied in order to an empty room, they give its members, because the first
one after the process starts following a room joins everybody already there, and the one
after it stops following leaves everybody.

Plain logic with an injected clock: no I/O, no timers; the service arms them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import msgspec

__all__ = ["PresenceBook", "PresenceNotice", "decode_notice", "encode_notice"]


class PresenceNotice(msgspec.Struct, array_like=True, frozen=True, omit_defaults=True):
    """What a node tells a room's channel about its presence (never sent to clients).

    `joined` and `left` are the node's own members; `resync` asks every node following the
    room to read it again (members were purged or restored without a notice of their own).
    """

    joined: dict[str, str] = {}
    left: tuple[str, ...] = ()
    resync: bool = False


encode_notice = msgspec.msgpack.Encoder().encode
decode_notice = msgspec.msgpack.Decoder(PresenceNotice).decode

# a change kept while a snapshot is read: (joined, left)
_Change = tuple[Mapping[str, str], tuple[str, ...]]


@dataclass(slots=True)
class _Room:
    members: dict[str, str] = field(default_factory=dict)
    joined: dict[str, str] = field(default_factory=dict)  # since the last announcement
    left: dict[str, str] = field(default_factory=dict)
    loading: bool = True  # waits for the snapshot of read `generation`
    generation: int = 0  # of the latest snapshot read begun; older ones are ignored
    kept: list[_Change] = field(default_factory=list)  # offered since that read began
    armed: bool = False  # the caller has a timer for this room
    announcing: bool = False  # an announcement is being made
    last: float | None = None  # when the last announcement began
    followed: bool = True  # False: left by its last local member, to be forgotten

    def join(self, member: str, identity: str) -> None:
        old = self.members.get(member)
        if old == identity:
            return
        if old is not None:
            self.leave(member)
        self.members[member] = identity
        if self.left.get(member) == identity:
            del self.left[member]
        else:
            self.joined[member] = identity

    def leave(self, member: str) -> None:
        identity = self.members.pop(member, None)
        if identity is None:
            return
        if self.joined.pop(member, None) is None:
            self.left[member] = identity

    def apply(self, joined: Mapping[str, str], left: Iterable[str]) -> None:
        for member in left:
            self.leave(member)
        for member, identity in joined.items():
            self.join(member, identity)


class PresenceBook:
    """The rooms this process follows: their members, pending changes and announcement times.

    `interval` is the least time between two announcements of one room, stretched for rooms
    of more than `crowd` members (None: never); `clock` gives the time in seconds.
    """

    def __init__(self, interval: float, clock: Callable[[], float], crowd: int | None = None) -> None:
        if not interval >= 0:
            raise ValueError(f"presence_interval must be 0 or more seconds, got {interval!r}")
        if crowd is not None and crowd < 1:
            raise ValueError(f"presence_crowd must be at least 1 member (or None), got {crowd!r}")
        self.interval = interval
        self.crowd = crowd
        self._clock = clock
        self._rooms: dict[str, _Room] = {}

    def __contains__(self, room: object) -> bool:
        return room in self._rooms and self._rooms[room].followed

    def rooms(self) -> list[str]:
        """The rooms followed."""
        return [name for name, state in self._rooms.items() if state.followed]

    def members(self, room: str) -> dict[str, str]:
        """`{member: identity}` of `room` as last applied (empty while not followed)."""
        state = self._rooms.get(room)
        return dict(state.members) if state is not None else {}

    def is_loading(self, room: str) -> bool:
        """Whether `room` waits for a snapshot before its changes are applied."""
        state = self._rooms.get(room)
        return state is not None and state.loading

    # following and snapshots ---------------------------------------------------------

    def follow(self, room: str) -> int | None:
        """Start following `room`; the token of the snapshot to read, None when followed already."""
        state = self._rooms.get(room)
        if state is None:
            state = self._rooms[room] = _Room()
        elif state.followed:
            return None
        state.followed = True
        return self.begin_load(room)

    def unfollow(self, room: str) -> None:
        """Stop following `room`: everybody leaves (announced), then the room is forgotten."""
        state = self._rooms.get(room)
        if state is None or not state.followed:
            return
        state.followed = False
        state.loading = False
        state.generation += 1  # a read in flight is not applied
        state.kept.clear()
        for member in list(state.members):
            state.leave(member)
        if not state.joined and not state.left and not state.announcing and not state.armed:
            del self._rooms[room]

    def begin_load(self, room: str) -> int | None:
        """A fresh snapshot of `room` is needed: the token to `load` it with, None when not followed.

        Until the snapshot of the latest token is loaded, changes are kept and applied after
        it (those offered before are in it: their writes came before the read), and the
        room is not announced. A snapshot of an older token is ignored.
        """
        state = self._rooms.get(room)
        if state is None or not state.followed:
            return None
        state.loading = True
        state.generation += 1
        state.kept.clear()
        return state.generation

    def load(self, room: str, token: int, snapshot: Mapping[str, str]) -> bool:
        """Apply a snapshot read after `begin_load` gave `token`; False when it was ignored."""
        state = self._rooms.get(room)
        if state is None or not state.followed or not state.loading or token != state.generation:
            return False
        state.loading = False
        for member in [member for member in state.members if member not in snapshot]:
            state.leave(member)
        for member, identity in snapshot.items():
            state.join(member, identity)
        for joined, left in state.kept:
            state.apply(joined, left)
        state.kept.clear()
        return True

    # changes and announcements ---------------------------------------------------------

    def change(
        self, room: str, joined: Mapping[str, str] = {}, left: Iterable[str] = ()
    ) -> None:  # read only
        """Members of `room` joined (`{member: identity}`) or left (member ids); ignored when not followed."""
        state = self._rooms.get(room)
        if state is None or not state.followed:
            return
        if state.loading:
            state.kept.append((joined, tuple(left)))
        else:
            state.apply(joined, left)

    def due(self, room: str) -> float | None:
        """Seconds until `room`'s pending change should be announced, when a timer must be armed now.

        None when nothing is pending, a timer is armed already, an announcement is in
        progress, or a snapshot is awaited. Marks the timer armed.
        """
        state = self._rooms.get(room)
        if (
            state is None
            or state.armed
            or state.announcing
            or state.loading
            or (not state.joined and not state.left)
        ):
            return None
        state.armed = True
        if state.last is None:
            return 0.0
        gap = self.interval
        if self.crowd is not None and len(state.members) > self.crowd:
            gap *= len(state.members) / self.crowd
        return max(0.0, state.last + gap - self._clock())

    def take(self, room: str) -> tuple[dict[str, str], dict[str, str]] | None:
        """The timer fired: `(joined, left)` to announce now, or None when nothing is due.

        The caller calls `announced` once the announcement is made.
        """
        state = self._rooms.get(room)
        if state is None:
            return None
        state.armed = False
        if state.announcing or state.loading or (not state.joined and not state.left):
            self._forget_if_done(room, state)
            return None
        joined, left = state.joined, state.left
        state.joined, state.left = {}, {}
        state.announcing = True
        state.last = self._clock()
        return joined, left

    def announced(self, room: str) -> None:
        """The announcement `take` gave was made; the next one may be armed (`due`)."""
        state = self._rooms.get(room)
        if state is None:
            return
        state.announcing = False
        self._forget_if_done(room, state)

    def _forget_if_done(self, room: str, state: _Room) -> None:
        if not state.followed and not state.announcing and not state.joined and not state.left:
            del self._rooms[room]

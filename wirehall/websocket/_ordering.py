"""Putting a room's positioned broadcasts in order: plain logic, no awaits, no I/O.

An app that stores a room's messages can number them: position 1 for the room's first
message, each next one 1 more (a per-room counter kept in the same transaction as the
message). A broadcast that carries its position can then be delivered in position order
on every process, each once, whichever process stored it and whatever order the backplane
carried it in: `RoomOrder` holds back what arrives early until the gap before it is
filled (by the missing broadcast, or by the app's history after a timeout), and drops
what was delivered already.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["MAX_PENDING", "RoomOrder"]

T = TypeVar("T")

MAX_PENDING = 10_000  # positioned broadcasts held back per room, waiting for a gap to close


class RoomOrder(Generic[T]):
    """One room's delivery position: what was delivered, and what waits for a gap to close.

    `next` is the position to deliver next (None until known: the first `start` or, if
    nothing starts the room, the first item offered). Time comes from `clock`, so the gap
    timeout is tested without sleeping.
    """

    __slots__ = ("_clock", "_pending", "gap_since", "next")

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.next: int | None = None
        self._pending: dict[int, T] = {}
        self.gap_since: float | None = None  # when the oldest unfilled gap opened

    @property
    def waiting(self) -> int:
        """How many items are held back behind a gap."""
        return len(self._pending)

    @property
    def oldest_waiting(self) -> int | None:
        """The lowest position held back, if any."""
        return min(self._pending) if self._pending else None

    @property
    def has_gap(self) -> bool:
        """True while items are held back waiting for an earlier position."""
        return bool(self._pending)

    def start(self, after: int) -> list[tuple[int, T]]:
        """Deliver from position `after + 1` on, if nothing set the position yet.

        Returns what is now ready, in order (items held back that follow `after`).
        """
        if self.next is not None:
            return []
        self.next = after + 1
        for position in [p for p in self._pending if p <= after]:
            del self._pending[position]
        return self._drain()

    def offer(self, position: int, item: T, *, autostart: bool = True) -> list[tuple[int, T]]:
        """Take `item` at `position`; return the items now ready to deliver, in order.

        An item already delivered (or already waiting) is dropped: the result is empty.
        With `autostart` (no joiner is waiting to set the start), an unstarted room starts at
        the first item offered; otherwise it waits for `start`.
        """
        if self.next is None:
            self._hold(position, item)
            if not autostart:
                return []
            self.next = min(self._pending)  # what waited for a start comes first
            return self._drain()
        if position < self.next or position in self._pending:
            return []
        if position > self.next:
            self._hold(position, item)
            return []
        self.next = position + 1
        return [(position, item), *self._drain()]

    def skip_gap(self) -> list[tuple[int, T]]:
        """Give up on the current gap: deliver what waits behind it, in order."""
        if not self._pending:
            return []
        self.next = min(self._pending)
        return self._drain()

    def _hold(self, position: int, item: T) -> None:
        if len(self._pending) >= MAX_PENDING and position not in self._pending:
            # Too far behind: the oldest gap will not be filled by live traffic. Keep the
            # positions closest to delivery; the newest is left to the replay.
            newest = max(self._pending)
            if position > newest:
                return
            del self._pending[newest]
        self._pending[position] = item
        if self.gap_since is None:
            self.gap_since = self._clock()

    def _drain(self) -> list[tuple[int, T]]:
        ready: list[tuple[int, T]] = []
        pending = self._pending
        position = self.next
        if position is not None:
            while position in pending:
                ready.append((position, pending.pop(position)))
                position += 1
            self.next = position
        if not pending:
            self.gap_since = None
        elif ready:
            self.gap_since = self._clock()  # progress: the gap that remains is a new one
        return ready

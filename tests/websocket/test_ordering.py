"""RoomOrder: a room's positioned broadcasts in order, each once, with an injected clock."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from wirehall.websocket._ordering import MAX_PENDING, RoomOrder


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def started(after: int = 0) -> tuple[RoomOrder[str], Clock]:
    clock = Clock()
    order: RoomOrder[str] = RoomOrder(clock)
    assert order.start(after) == []
    return order, clock


def test_items_in_order_are_ready_at_once() -> None:
    order, _ = started()
    assert order.offer(1, "a") == [(1, "a")]
    assert order.offer(2, "b") == [(2, "b")]
    assert order.next == 3
    assert not order.has_gap
    assert order.gap_since is None


def test_an_early_item_waits_for_the_gap_before_it() -> None:
    order, _ = started()
    assert order.offer(3, "c") == []
    assert order.offer(2, "b") == []
    assert order.waiting == 2
    assert order.has_gap
    assert order.offer(1, "a") == [(1, "a"), (2, "b"), (3, "c")]
    assert order.waiting == 0
    assert order.next == 4


def test_duplicates_of_delivered_or_waiting_items_are_dropped() -> None:
    order, _ = started()
    assert order.offer(1, "a") == [(1, "a")]
    assert order.offer(1, "a again") == []
    assert order.offer(3, "c") == []
    assert order.offer(3, "c again") == []
    assert order.waiting == 1
    assert order.offer(2, "b") == [(2, "b"), (3, "c")]
    assert order.offer(2, "b again") == []
    assert order.offer(3, "c once more") == []


def test_start_drops_what_is_older_and_drains_what_follows() -> None:
    clock = Clock()
    order: RoomOrder[str] = RoomOrder(clock)
    for position in (4, 2, 6, 3):
        assert order.offer(position, f"m{position}", autostart=False) == []
    assert order.next is None
    assert order.start(2) == [(3, "m3"), (4, "m4")]
    assert order.next == 5
    assert order.waiting == 1  # 6 waits for 5
    assert order.offer(5, "m5") == [(5, "m5"), (6, "m6")]


def test_start_only_counts_once() -> None:
    order, _ = started(10)
    assert order.start(3) == []
    assert order.next == 11
    assert order.offer(5, "old") == []


def test_start_after_everything_waiting_leaves_no_gap() -> None:
    clock = Clock()
    order: RoomOrder[str] = RoomOrder(clock)
    order.offer(2, "b", autostart=False)
    assert order.gap_since == clock.now
    assert order.start(5) == []
    assert not order.has_gap
    assert order.gap_since is None


def test_without_a_start_a_room_waits_unless_it_may_start_by_itself() -> None:
    waiting: RoomOrder[str] = RoomOrder(Clock())
    assert waiting.offer(7, "g", autostart=False) == []
    assert waiting.next is None
    assert waiting.offer(8, "h", autostart=False) == []
    assert waiting.start(6) == [(7, "g"), (8, "h")]

    autostarting: RoomOrder[str] = RoomOrder(Clock())
    assert autostarting.offer(7, "g") == [(7, "g")]
    assert autostarting.next == 8
    assert autostarting.offer(6, "older than the start") == []


def test_a_room_that_starts_by_itself_begins_with_the_oldest_item_waiting() -> None:
    order: RoomOrder[str] = RoomOrder(Clock())
    order.offer(5, "e", autostart=False)
    order.offer(6, "f", autostart=False)
    # the joiner that held the room left without a start: the room starts by itself
    assert order.offer(8, "h") == [(5, "e"), (6, "f")]
    assert order.offer(7, "g") == [(7, "g"), (8, "h")]


def test_skip_gap_delivers_what_waits_behind_it_in_order() -> None:
    order, _ = started()
    order.offer(1, "a")
    for position in (6, 3, 4):
        order.offer(position, f"m{position}")
    assert order.skip_gap() == [(3, "m3"), (4, "m4")]
    assert order.next == 5
    assert order.skip_gap() == [(6, "m6")]
    assert order.next == 7
    assert order.skip_gap() == []
    assert order.offer(2, "too late") == []
    assert order.offer(5, "too late") == []


def test_gap_since_is_when_the_gap_opened_and_moves_on_progress() -> None:
    order, clock = started()
    assert order.gap_since is None
    order.offer(3, "c")
    assert order.gap_since == 100.0
    clock.now = 101.0
    order.offer(5, "e")
    assert order.gap_since == 100.0  # the oldest gap is still the one that opened first
    clock.now = 102.0
    assert order.offer(1, "a") == [(1, "a")]  # 2 is missing: no item was released
    assert order.gap_since == 100.0
    clock.now = 103.0
    assert order.offer(2, "b") == [(2, "b"), (3, "c")]
    assert order.gap_since == 103.0  # progress: the gap before 5 is timed from now
    clock.now = 104.0
    assert order.offer(4, "d") == [(4, "d"), (5, "e")]
    assert order.gap_since is None


def test_skip_gap_resets_gap_since() -> None:
    order, clock = started()
    order.offer(2, "b")
    order.offer(4, "d")
    clock.now = 150.0
    assert order.skip_gap() == [(2, "b")]
    assert order.gap_since == 150.0
    assert order.skip_gap() == [(4, "d")]
    assert order.gap_since is None


def test_waiting_items_are_bounded_by_max_pending_keeping_those_closest_to_delivery() -> None:
    order, _ = started()
    for position in range(2, MAX_PENDING + 2):
        order.offer(position, f"m{position}")
    assert order.waiting == MAX_PENDING
    order.offer(MAX_PENDING + 5, "newest")  # full: the newest is left to the replay
    order.offer(3, "again")  # already waiting: not counted twice, nothing evicted
    assert order.waiting == MAX_PENDING
    assert order.oldest_waiting == 2
    ready = order.offer(1, "a")
    assert [position for position, _ in ready] == list(range(1, MAX_PENDING + 2))
    assert order.waiting == 0
    assert order.offer(MAX_PENDING + 2, "next") == [(MAX_PENDING + 2, "next")]


def test_a_full_order_makes_room_for_an_older_position() -> None:
    order, _ = started()
    for position in range(3, MAX_PENDING + 3):
        order.offer(position, f"m{position}")
    order.offer(2, "b")  # closer to delivery than the newest waiting: the newest goes
    assert order.waiting == MAX_PENDING
    ready = order.offer(1, "a")
    assert [position for position, _ in ready] == list(range(1, MAX_PENDING + 2))
    assert order.oldest_waiting is None


@given(
    st.integers(min_value=1, max_value=60).flatmap(
        lambda n: st.tuples(
            st.just(n),
            st.permutations(list(range(1, n + 1))),
            st.lists(st.integers(min_value=1, max_value=n), max_size=30),
            st.randoms(use_true_random=False),
        )
    )
)
def test_any_arrival_order_with_duplicates_yields_each_position_once_in_order(
    case: tuple[int, list[int], list[int], random.Random],
) -> None:
    n, permutation, duplicates, rng = case
    arrivals = [*permutation, *duplicates]
    rng.shuffle(arrivals)
    order, _ = started(0)
    delivered: list[int] = []
    for position in arrivals:
        for ready_position, item in order.offer(position, f"m{position}"):
            assert item == f"m{ready_position}"
            delivered.append(ready_position)
    assert delivered == list(range(1, n + 1))
    assert not order.has_gap
    assert order.gap_since is None

"""Envelopes on the backplane and the window that makes delivery exactly-once."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from wirehall.websocket._envelope import (
    WINDOW,
    Envelope,
    Kind,
    SeenWindow,
    decode_envelope,
    encode_envelope,
)


def test_envelope_round_trips_compactly() -> None:
    envelope = Envelope("node-a", 7, Kind.ROOM, "lobby", text='{"type":"message"}', exclude=("node-a.1",))
    payload = encode_envelope(envelope)
    assert decode_envelope(payload) == envelope
    assert len(payload) < 60
    binary = Envelope("n", 1, Kind.DIRECT, "n.1", data=b"\x00\xff")
    assert decode_envelope(encode_envelope(binary)).data == b"\x00\xff"


def test_window_accepts_new_numbers_once() -> None:
    seen = SeenWindow()
    assert [seen.accept(n) for n in (1, 2, 2, 1, 3)] == [True, True, False, False, True]


def test_window_accepts_late_numbers_inside_it_and_refuses_older_ones() -> None:
    seen = SeenWindow()
    assert seen.accept(10)
    assert seen.accept(8)
    assert seen.accept(9)
    assert not seen.accept(8)
    assert seen.accept(10 + WINDOW)
    assert not seen.accept(10)  # fell out of the window
    assert seen.accept(11)  # still inside it, never seen


@given(st.lists(st.integers(min_value=1, max_value=3 * WINDOW), max_size=300))
def test_window_never_accepts_a_number_twice(numbers: list[int]) -> None:
    seen = SeenWindow()
    accepted = [n for n in numbers if seen.accept(n)]
    assert len(accepted) == len(set(accepted))


@given(st.permutations(list(range(1, 200))))
def test_window_accepts_every_number_of_a_small_reordering(numbers: list[int]) -> None:
    seen = SeenWindow()
    assert all(seen.accept(n) for n in numbers)

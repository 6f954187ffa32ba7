"""The connection core: its state machine and its verdicts, with no socket and no event loop."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wirehall.websocket._core import (
    ConnectionCore,
    FramePolicy,
    Outgoing,
    OutputLimits,
    Phase,
    SlowConsumerPolicy,
    Verdict,
)
from wirehall.websocket.codes import CloseCode
from wirehall.websocket.ratelimit import RateLimit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def phase(core: ConnectionCore) -> Phase:
    """The core's state (a call, so that the type checker does not narrow it between steps)."""
    return core.state


def open_core(
    policy: FramePolicy | None = None, limits: OutputLimits | None = None, **kw: Any
) -> ConnectionCore:
    core = ConnectionCore(policy, limits, **kw)
    assert core.accept()
    return core


# the state machine ----------------------------------------------------------------------


def test_a_core_opens_once_and_closes_through_closing() -> None:
    core = ConnectionCore()
    assert phase(core) is Phase.CONNECTING
    assert core.accept()
    assert not core.accept()
    assert core.start_close(CloseCode.NORMAL)
    assert phase(core) is Phase.CLOSING
    assert not core.start_close(CloseCode.GOING_AWAY)  # closing already: nothing more to send
    core.closed(CloseCode.ABNORMAL)  # the peer's answer, or the socket gone
    assert phase(core) is Phase.CLOSED
    assert core.close_code == CloseCode.NORMAL  # the first code stays


def test_closing_before_the_handshake_closes_at_once() -> None:
    core = ConnectionCore()
    assert core.start_close(CloseCode.POLICY_VIOLATION)
    assert phase(core) is Phase.CLOSED
    assert not core.accept()
    assert phase(core) is Phase.CLOSED


_EVENTS = st.one_of(
    st.just(("accept",)),
    st.tuples(st.just("start_close"), st.sampled_from([1000, 1001, 1008, 1013])),
    st.tuples(st.just("closed"), st.sampled_from([1000, 1005, 1006])),
    st.tuples(st.just("receive"), st.one_of(st.text(max_size=20), st.binary(max_size=20))),
)
_LEGAL = {
    Phase.CONNECTING: {Phase.CONNECTING, Phase.OPEN, Phase.CLOSED},
    Phase.OPEN: {Phase.OPEN, Phase.CLOSING, Phase.CLOSED},
    Phase.CLOSING: {Phase.CLOSING, Phase.CLOSED},
    Phase.CLOSED: {Phase.CLOSED},
}


@settings(max_examples=300, deadline=None)
@given(st.lists(_EVENTS, max_size=30), st.sampled_from(["text", "bytes", "any"]))
def test_any_sequence_of_events_moves_only_forward_and_accepts_nothing_after_a_close(
    events: list[tuple[Any, ...]], receives: Any
) -> None:
    core = ConnectionCore(FramePolicy(receives, max_size=10, rate_limit=RateLimit(1000, burst=3)))
    closing_started = False
    for event in events:
        before = core.state
        if event[0] == "accept":
            core.accept()
        elif event[0] == "start_close":
            core.start_close(event[1])
        elif event[0] == "closed":
            core.closed(event[1])
        else:
            incoming = core.receive(event[1])
            if closing_started or before is not Phase.OPEN:
                assert incoming.verdict is Verdict.IGNORE
            if incoming.verdict is Verdict.CLOSE:
                assert phase(core) is Phase.CLOSING
                assert core.close_code == incoming.code
        assert core.state in _LEGAL[before]
        if core.state in (Phase.CLOSING, Phase.CLOSED):
            closing_started = True
            assert core.close_code is not None
        assert core.is_open == (core.state is Phase.OPEN)


# incoming -----------------------------------------------------------------------------


def test_a_binary_frame_on_a_text_route_closes_with_1003() -> None:
    core = open_core(FramePolicy("text"))
    incoming = core.receive(b"\x00")
    assert (incoming.verdict, incoming.code) == (Verdict.CLOSE, CloseCode.UNSUPPORTED_DATA)
    assert "binary frames are not accepted" in incoming.text
    assert phase(core) is Phase.CLOSING
    assert core.receive("late").verdict is Verdict.IGNORE


def test_a_text_frame_on_a_bytes_route_closes_with_1003() -> None:
    incoming = open_core(FramePolicy("bytes")).receive("hi")
    assert (incoming.verdict, incoming.code) == (Verdict.CLOSE, CloseCode.UNSUPPORTED_DATA)


@pytest.mark.parametrize(
    ("message", "accepted"),
    [("a" * 8, True), ("a" * 9, False), ("é" * 4, True), ("é" * 5, False), (b"x" * 9, False)],
)
def test_size_is_counted_in_utf8_bytes_and_over_the_limit_closes_with_1009(
    message: str | bytes, accepted: bool
) -> None:
    incoming = open_core(FramePolicy("any", max_size=8)).receive(message)
    if accepted:
        assert incoming.verdict is Verdict.ACCEPT
        assert incoming.value == message
        assert incoming.size == len(message.encode() if isinstance(message, str) else message)
    else:
        assert (incoming.verdict, incoming.code) == (Verdict.CLOSE, CloseCode.MESSAGE_TOO_BIG)
        assert "the limit is 8" in incoming.text


def test_over_the_rate_an_error_reply_then_a_1008_close_for_a_client_that_keeps_on() -> None:
    clock = Clock()
    limit = RateLimit(per_second=1, burst=2, max_violations=2)
    core = open_core(FramePolicy("text", rate_limit=limit), clock=clock)
    verdicts = [core.receive("m").verdict for _ in range(5)]
    assert verdicts == [Verdict.ACCEPT, Verdict.ACCEPT, Verdict.REPLY, Verdict.REPLY, Verdict.CLOSE]
    assert core.close_code == CloseCode.POLICY_VIOLATION


def test_the_rate_limit_reply_says_what_the_limit_is() -> None:
    core = open_core(FramePolicy("text", rate_limit=RateLimit(per_second=2, burst=1)), clock=Clock())
    core.receive("a")
    incoming = core.receive("b")
    assert incoming.verdict is Verdict.REPLY
    assert incoming.text.startswith("rate limit exceeded: at most 2 messages per second")


class Move(msgspec.Struct):
    x: int


def test_a_message_that_does_not_decode_is_invalid_with_the_reason_and_the_raw_message() -> None:
    core = open_core(FramePolicy("text", decode=msgspec.json.Decoder(Move).decode))
    accepted = core.receive('{"x": 1}')
    assert (accepted.verdict, accepted.value) == (Verdict.ACCEPT, Move(1))
    invalid = core.receive('{"x": "no"}')
    assert invalid.verdict is Verdict.INVALID
    assert invalid.value == '{"x": "no"}'
    assert "Expected `int`" in invalid.text
    assert core.is_open  # an invalid message does not close


def test_a_message_nested_too_deeply_is_invalid_not_a_crash() -> None:
    def deep(_: str | bytes) -> Any:
        raise RecursionError

    incoming = open_core(FramePolicy("text", decode=deep)).receive("[[[[")
    assert (incoming.verdict, incoming.text) == (Verdict.INVALID, "the message is nested too deeply")


def test_a_bad_policy_is_refused_when_built() -> None:
    with pytest.raises(ValueError, match="receives"):
        FramePolicy("json")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_size"):
        FramePolicy("text", max_size=0)


# outgoing -----------------------------------------------------------------------------


def test_messages_wait_for_the_handshake_then_an_idle_connection_writes_at_once() -> None:
    core = ConnectionCore()
    assert core.offer(10, 0.0) is Outgoing.QUEUE
    assert core.drain_by is None  # no deadline before the handshake
    core.dequeued(10)
    core.accept()
    assert core.idle
    assert core.offer(10, 0.0) is Outgoing.WRITE


def test_a_full_queue_follows_the_slow_consumer_policy() -> None:
    verdicts = {}
    for policy in SlowConsumerPolicy:
        core = open_core(limits=OutputLimits(max_queue=2, policy=policy, max_pending_bytes=None))
        core.write_started(0.0)
        assert [core.offer(1, 0.0), core.offer(1, 0.0)] == [Outgoing.QUEUE, Outgoing.QUEUE]
        verdicts[policy] = core.offer(1, 0.0)
        assert core.offer(1, 0.0, awaited=True) is Outgoing.QUEUE  # an awaited send is never dropped
    assert verdicts == {
        SlowConsumerPolicy.CLOSE: Outgoing.EVICT_FULL,
        SlowConsumerPolicy.DROP_NEWEST: Outgoing.DROP,
        SlowConsumerPolicy.DROP_OLDEST: Outgoing.DROP_OLDEST,
    }


def test_over_the_byte_budget_evicts_but_one_large_message_may_wait_alone() -> None:
    core = open_core(limits=OutputLimits(max_pending_bytes=100, drain_timeout=None))
    core.write_started(0.0)
    assert core.offer(500, 0.0) is Outgoing.QUEUE
    assert core.offer(1, 0.0) is Outgoing.EVICT_STALLED
    assert "more than 100 bytes" in core.eviction


def test_output_backed_up_past_the_drain_deadline_evicts() -> None:
    core = open_core(limits=OutputLimits(drain_timeout=10.0))
    core.write_started(50.0)
    assert core.deadline_left(55.0) == 5.0
    assert core.offer(1, 59.0) is Outgoing.QUEUE
    assert core.offer(1, 60.0) is Outgoing.EVICT_STALLED
    assert core.eviction == "its output did not drain for 10s"


def test_draining_stops_the_deadline_and_the_connection_writes_at_once_again() -> None:
    core = open_core(limits=OutputLimits(drain_timeout=10.0))
    core.write_started(0.0)
    core.offer(3, 1.0)
    core.dequeued(3)
    core.write_finished()
    assert core.deadline_left(2.0) == 8.0  # what was queued is being written: still running
    core.write_started()
    core.drained()
    assert core.deadline_left(100.0) is None
    assert core.offer(1, 100.0) is Outgoing.WRITE


def test_a_closing_connection_takes_no_broadcasts_but_writes_its_close_frame() -> None:
    core = open_core()
    core.stop_broadcasts()
    assert core.offer(1, 0.0) is Outgoing.DROP
    assert core.offer(0, 0.0, awaited=True) is Outgoing.WRITE


def test_a_dead_output_drops_everything() -> None:
    core = open_core()
    core.abandon()
    assert core.offer(1, 0.0) is Outgoing.DROP
    assert core.offer(1, 0.0, awaited=True) is Outgoing.DROP
    core.drained()  # a late "drained" does not bring it back
    assert not core.idle


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("offer"), st.integers(0, 60), st.booleans()),
            st.just(("done",)),
            st.tuples(st.just("tick"), st.floats(0, 4)),
        ),
        max_size=60,
    )
)
def test_the_byte_count_matches_what_waits_and_stays_within_the_budget(events: list[tuple[Any, ...]]) -> None:
    """Driven like the outbox drives it: the counts match a model queue, and the budget holds."""
    core = open_core(limits=OutputLimits(max_queue=5, max_pending_bytes=100, drain_timeout=10.0))
    queue: list[int] = []
    now = 0.0
    for event in events:
        if core.dead:
            break
        if event[0] == "offer":
            verdict = core.offer(event[1], now, awaited=event[2])
            if verdict is Outgoing.QUEUE:
                queue.append(event[1])
            elif verdict is Outgoing.WRITE:
                core.write_started(now)  # it did not finish at once
            elif verdict in (Outgoing.EVICT_FULL, Outgoing.EVICT_STALLED):
                core.abandon()
                queue.clear()
        elif event[0] == "done" and core.writing:
            if queue:  # the next queued message goes out and is in flight in its turn
                core.write_finished()
                core.dequeued(queue.pop(0))
                core.write_started(now)
            else:
                core.drained()
        elif event[0] == "tick":
            now += event[1]
        assert core.queued == len(queue)
        assert core.pending_bytes == sum(queue)
        assert len(queue) <= 1 or sum(queue) <= 100
        if core.idle:
            assert not queue

"""The per-connection outbox: eager writes, hand-over to a writer task, order, slow consumers."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.websocket._support import eventually
from wirehall.errors import WebSocketDisconnectError
from wirehall.types import Message
from wirehall.websocket._core import ConnectionCore, Outgoing, OutputLimits
from wirehall.websocket._outbox import Outbox, SlowConsumerPolicy


class Owner:
    """The connection an outbox belongs to: its core, and what the outbox told it."""

    def __init__(self) -> None:
        self.core = ConnectionCore()
        self.failed: list[BaseException] = []
        self.overflows: list[int] = []
        self.stalls: list[str] = []

    def report(self, verdict: Outgoing | None, reason: str, error: BaseException | None) -> None:
        if verdict is None:
            assert error is not None
            self.failed.append(error)
        elif verdict is Outgoing.EVICT_FULL:
            self.overflows.append(int(reason.split()[0]))  # "N messages queued, the limit"
        else:
            self.stalls.append(reason)


def new_outbox(
    send: Any,
    owner: Owner,
    max_queue: int = 1024,
    policy: SlowConsumerPolicy = SlowConsumerPolicy.CLOSE,
    *,
    max_pending_bytes: int | None = None,
    drain_timeout: float | None = None,
    clock: Any = None,
) -> Outbox:
    owner.core.set_limits(OutputLimits(max_queue, policy, max_pending_bytes, drain_timeout))
    return Outbox(send, owner.core, owner.report, clock=clock)


def open_outbox(outbox: Outbox, owner: Owner) -> None:
    """The handshake was accepted: the core opens, then the outbox writes what waited."""
    assert owner.core.accept()
    outbox.open()


class Socket:
    """A fake server `send`: like uvicorn, it only suspends while the transport is paused."""

    def __init__(self) -> None:
        self.written: list[Message] = []
        self.writable = asyncio.Event()
        self.writable.set()
        self.error: BaseException | None = None

    async def send(self, message: Message) -> None:
        await self.writable.wait()
        if self.error is not None:
            raise self.error
        self.written.append(message)

    def texts(self) -> list[str]:
        return [m["text"] for m in self.written]


def frame(text: str) -> Message:
    return {"type": "websocket.send", "text": text}


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """Calls of the loop's exception handler (e.g. 'Task exception was never retrieved')."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    yield errors
    gc.collect()
    loop.set_exception_handler(previous)


def make(
    max_queue: int = 8, policy: SlowConsumerPolicy = SlowConsumerPolicy.CLOSE
) -> tuple[Outbox, Socket, Owner]:
    socket, owner = Socket(), Owner()
    outbox = new_outbox(socket.send, owner, max_queue, policy)
    open_outbox(outbox, owner)
    return outbox, socket, owner


async def wait_idle(outbox: Outbox) -> None:
    await eventually(lambda: not outbox.is_backed_up)


async def test_idle_socket_is_written_at_once_without_a_task() -> None:
    outbox, socket, _ = make()
    tasks_before = asyncio.all_tasks()
    outbox.put_nowait(frame("a"))
    outbox.put_nowait(frame("b"))
    assert socket.texts() == ["a", "b"]  # written before put_nowait returned
    assert asyncio.all_tasks() == tasks_before
    assert not outbox.is_backed_up
    assert outbox.depth == 0


async def test_backed_up_socket_gets_a_writer_task_only_until_drained() -> None:
    outbox, socket, _ = make()
    socket.writable.clear()
    outbox.put_nowait(frame("1"))
    assert outbox.is_backed_up
    outbox.put_nowait(frame("2"))
    outbox.put_nowait(frame("3"))
    assert outbox.depth == 2
    assert socket.written == []
    socket.writable.set()
    await wait_idle(outbox)
    assert socket.texts() == ["1", "2", "3"]
    tasks_before = asyncio.all_tasks()
    outbox.put_nowait(frame("4"))
    assert socket.texts()[-1] == "4"
    assert asyncio.all_tasks() == tasks_before


async def test_awaited_put_keeps_its_place_among_queued_broadcasts() -> None:
    outbox, socket, _ = make()
    socket.writable.clear()
    outbox.put_nowait(frame("broadcast-1"))
    reply = asyncio.create_task(outbox.put(frame("reply")))
    await asyncio.sleep(0)
    outbox.put_nowait(frame("broadcast-2"))
    assert not reply.done()
    socket.writable.set()
    async with asyncio.timeout(2):
        await reply
    await wait_idle(outbox)
    assert socket.texts() == ["broadcast-1", "reply", "broadcast-2"]


async def test_awaited_put_on_an_idle_socket_returns_once_written() -> None:
    outbox, socket, _ = make()
    await outbox.put(frame("x"))
    assert socket.texts() == ["x"]


async def test_messages_before_open_wait_for_the_handshake() -> None:
    socket, owner = Socket(), Owner()
    outbox = new_outbox(socket.send, owner)
    outbox.put_nowait(frame("early"))
    assert socket.written == []
    open_outbox(outbox, owner)
    assert socket.texts() == ["early"]


async def test_full_queue_closes_the_slow_consumer_and_fails_waiting_puts(
    loop_errors: list[dict[str, Any]],
) -> None:
    outbox, socket, owner = make(max_queue=3)
    socket.writable.clear()
    outbox.put_nowait(frame("in flight"))
    waiting = asyncio.create_task(outbox.put(frame("awaited")))
    await asyncio.sleep(0)
    outbox.put_nowait(frame("q2"))
    outbox.put_nowait(frame("q3"))
    assert owner.overflows == []
    outbox.put_nowait(frame("too many"))
    assert owner.overflows == [3]
    assert not outbox.is_backed_up
    with pytest.raises(WebSocketDisconnectError):
        async with asyncio.timeout(2):
            await waiting
    outbox.put_nowait(frame("after"))
    socket.writable.set()
    await asyncio.sleep(0.01)  # a bounded wait for "nothing more": a live writer would write now
    assert socket.written == []  # the backlog was dropped, nothing more is written
    with pytest.raises(WebSocketDisconnectError):
        await outbox.put(frame("later"))
    assert loop_errors == []


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (SlowConsumerPolicy.DROP_OLDEST, ["0", "3", "4"]),
        (SlowConsumerPolicy.DROP_NEWEST, ["0", "1", "2"]),
    ],
)
async def test_drop_policies_keep_the_connection(policy: SlowConsumerPolicy, expected: list[str]) -> None:
    outbox, socket, owner = make(max_queue=2, policy=policy)
    socket.writable.clear()
    for n in range(5):
        outbox.put_nowait(frame(str(n)))
    assert outbox.depth == 2
    socket.writable.set()
    await wait_idle(outbox)
    assert socket.texts() == expected
    assert owner.overflows == []
    outbox.put_nowait(frame("next"))
    assert socket.texts()[-1] == "next"


@pytest.mark.parametrize("error", [OSError("gone"), RuntimeError("after close")])
async def test_error_from_an_eager_write_marks_the_outbox_dead(error: Exception) -> None:
    outbox, socket, owner = make()
    socket.error = error
    outbox.put_nowait(frame("x"))  # must not raise
    assert owner.failed == [error]
    outbox.put_nowait(frame("y"))
    assert owner.failed == [error]  # told once
    with pytest.raises(WebSocketDisconnectError):
        await outbox.put(frame("z"))


async def test_error_in_the_writer_task_is_handled_not_left_unretrieved(
    loop_errors: list[dict[str, Any]],
) -> None:
    outbox, socket, owner = make()
    socket.writable.clear()
    outbox.put_nowait(frame("1"))
    waiting = asyncio.create_task(outbox.put(frame("2")))
    await asyncio.sleep(0)
    socket.error = ConnectionResetError("peer reset")
    socket.writable.set()
    with pytest.raises(WebSocketDisconnectError):
        async with asyncio.timeout(2):
            await waiting
    await wait_idle(outbox)
    assert len(owner.failed) == 1
    assert isinstance(owner.failed[0], ConnectionResetError)
    await asyncio.sleep(0)
    gc.collect()
    assert loop_errors == []


async def test_awaited_put_that_fails_raises_disconnect() -> None:
    outbox, socket, owner = make()
    socket.error = OSError("gone")
    with pytest.raises(WebSocketDisconnectError):
        await outbox.put(frame("x"))
    assert len(owner.failed) == 1


async def test_cancelled_put_is_not_written_and_the_rest_is() -> None:
    outbox, socket, _ = make()
    socket.writable.clear()
    outbox.put_nowait(frame("1"))
    cancelled = asyncio.create_task(outbox.put(frame("cancelled")))
    await asyncio.sleep(0)
    outbox.put_nowait(frame("3"))
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    socket.writable.set()
    await wait_idle(outbox)
    assert socket.texts() == ["1", "3"]


async def test_abort_while_backed_up_cancels_the_writer(loop_errors: list[dict[str, Any]]) -> None:
    outbox, socket, owner = make()
    socket.writable.clear()
    outbox.put_nowait(frame("1"))
    outbox.put_nowait(frame("2"))
    outbox.abort()
    assert not outbox.is_backed_up
    socket.writable.set()
    await asyncio.sleep(0.01)  # a bounded wait for "nothing more": a live writer would write now
    assert socket.written == []
    assert owner.failed == []
    assert loop_errors == []


async def test_a_send_returning_a_plain_future_works() -> None:
    loop = asyncio.get_running_loop()
    written: list[Message] = []
    gate: asyncio.Future[None] = loop.create_future()

    def send(message: Message) -> asyncio.Future[None]:
        future: asyncio.Future[None] = loop.create_future()

        def done(_: object) -> None:
            written.append(message)
            future.set_result(None)

        gate.add_done_callback(done)
        return future

    owner = Owner()
    outbox = new_outbox(send, owner)
    open_outbox(outbox, owner)
    outbox.put_nowait(frame("a"))
    assert outbox.is_backed_up
    gate.set_result(None)
    await wait_idle(outbox)
    assert [m["text"] for m in written] == ["a"]


async def test_closed_outbox_takes_no_broadcasts_but_still_writes_the_close() -> None:
    outbox, socket, _ = make()
    outbox.close()
    outbox.put_nowait(frame("dropped"))
    await outbox.put({"type": "websocket.close", "code": 1000})
    assert socket.written == [{"type": "websocket.close", "code": 1000}]


# slow consumers by bytes and by time ---------------------------------------------------


class Clock:
    """An injected clock: time moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_limited(
    *,
    max_pending_bytes: int | None = None,
    drain_timeout: float | None = None,
    clock: Clock | None = None,
    policy: SlowConsumerPolicy = SlowConsumerPolicy.CLOSE,
) -> tuple[Outbox, Socket, Owner]:
    socket, owner = Socket(), Owner()
    outbox = new_outbox(
        socket.send,
        owner,
        max_queue=100,
        policy=policy,
        max_pending_bytes=max_pending_bytes,
        drain_timeout=drain_timeout,
        clock=clock,
    )
    open_outbox(outbox, owner)
    return outbox, socket, owner


async def test_output_not_drained_within_the_drain_timeout_closes_the_connection(
    loop_errors: list[dict[str, Any]],
) -> None:
    clock = Clock()
    outbox, socket, owner = make_limited(drain_timeout=10.0, clock=clock)
    socket.writable.clear()
    outbox.put_nowait(frame("in flight"))  # the socket backs up now
    waiting = asyncio.create_task(outbox.put(frame("awaited")))
    await asyncio.sleep(0)
    clock.now += 9.9
    outbox.put_nowait(frame("still in time"))
    assert owner.stalls == []
    clock.now += 0.2
    outbox.put_nowait(frame("too late"))
    assert len(owner.stalls) == 1
    assert "did not drain for 10s" in owner.stalls[0]
    assert "2 messages" in owner.stalls[0]
    assert not outbox.is_backed_up
    assert outbox.depth == 0
    assert outbox.pending_bytes == 0
    with pytest.raises(WebSocketDisconnectError):
        async with asyncio.timeout(2):
            await waiting
    socket.writable.set()
    await asyncio.sleep(0.01)  # a bounded wait for "nothing more": a live writer would write now
    assert socket.written == []  # the backlog was dropped with the connection
    outbox.put_nowait(frame("after"))
    assert len(owner.stalls) == 1  # told once
    assert loop_errors == []


async def test_the_drain_deadline_starts_again_each_time_the_socket_backs_up() -> None:
    clock = Clock()
    outbox, socket, owner = make_limited(drain_timeout=10.0, clock=clock)
    socket.writable.clear()
    outbox.put_nowait(frame("1"))
    clock.now += 9.0
    socket.writable.set()
    await wait_idle(outbox)
    assert owner.core.drain_by is None  # no deadline while the socket keeps up
    clock.now += 5.0
    socket.writable.clear()
    outbox.put_nowait(frame("2"))
    clock.now += 9.0
    outbox.put_nowait(frame("3"))
    assert owner.stalls == []  # 18 s since the first backlog, 9 s since this one
    clock.now += 1.0
    outbox.put_nowait(frame("4"))
    assert len(owner.stalls) == 1


async def test_a_socket_backed_up_behind_an_awaited_put_is_held_to_the_deadline() -> None:
    clock = Clock()
    outbox, socket, owner = make_limited(drain_timeout=10.0, clock=clock)
    socket.writable.clear()
    reply = asyncio.create_task(outbox.put(frame("reply")))  # written in the caller's task
    await asyncio.sleep(0)
    outbox.put_nowait(frame("broadcast"))
    clock.now += 11.0
    outbox.put_nowait(frame("later"))
    assert len(owner.stalls) == 1
    reply.cancel()
    with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnectError):
        await reply


async def test_a_backed_up_socket_that_gets_no_more_messages_is_closed_by_the_timer() -> None:
    outbox, socket, owner = make_limited(drain_timeout=0.05)
    socket.writable.clear()
    started = asyncio.get_running_loop().time()
    outbox.put_nowait(frame("in flight"))
    outbox.put_nowait(frame("queued"))
    await eventually(lambda: bool(owner.stalls))
    assert asyncio.get_running_loop().time() - started >= 0.05
    assert "did not drain" in owner.stalls[0]
    assert not outbox.is_backed_up
    assert outbox.depth == 0


@pytest.mark.parametrize("policy", list(SlowConsumerPolicy))
async def test_queued_bytes_over_the_budget_close_the_connection_whatever_the_policy(
    policy: SlowConsumerPolicy,
) -> None:
    outbox, socket, owner = make_limited(max_pending_bytes=100, policy=policy)
    socket.writable.clear()
    outbox.put_nowait(frame("x" * 500))  # in flight: not waiting in the queue
    outbox.put_nowait(frame("a" * 60))
    outbox.put_nowait(frame("b" * 40))
    assert outbox.pending_bytes == 100
    assert owner.stalls == []
    outbox.put_nowait(frame("c"))
    assert len(owner.stalls) == 1
    assert "more than 100 bytes" in owner.stalls[0]
    assert "2 messages, 100 bytes" in owner.stalls[0]
    socket.writable.set()
    await asyncio.sleep(0.01)  # a bounded wait for "nothing more": a live writer would write now
    assert socket.written == []


async def test_an_awaited_put_over_the_budget_raises_disconnect() -> None:
    outbox, socket, owner = make_limited(max_pending_bytes=10)
    socket.writable.clear()
    outbox.put_nowait(frame("in flight"))
    outbox.put_nowait(frame("0123456789"))
    with pytest.raises(WebSocketDisconnectError):
        await outbox.put({"type": "websocket.send", "bytes": b"more"})
    assert len(owner.stalls) == 1


async def test_one_message_larger_than_the_budget_may_wait_alone() -> None:
    outbox, socket, owner = make_limited(max_pending_bytes=10)
    socket.writable.clear()
    outbox.put_nowait(frame("in flight"))
    outbox.put_nowait(frame("y" * 50))
    assert owner.stalls == []
    socket.writable.set()
    await wait_idle(outbox)
    assert socket.texts() == ["in flight", "y" * 50]
    assert outbox.pending_bytes == 0


async def test_pending_bytes_count_what_waits_and_return_to_zero_once_drained() -> None:
    outbox, socket, _ = make_limited(max_pending_bytes=1000, policy=SlowConsumerPolicy.DROP_OLDEST)
    socket.writable.clear()
    outbox.put_nowait(frame("in flight"))
    outbox.put_nowait(frame("abc"))
    outbox.put_nowait({"type": "websocket.send", "bytes": b"12345"})
    assert outbox.pending_bytes == 8
    socket.writable.set()
    await wait_idle(outbox)
    assert outbox.pending_bytes == 0


async def test_none_turns_the_byte_budget_and_the_drain_deadline_off() -> None:
    clock = Clock()
    outbox, socket, owner = make_limited(max_pending_bytes=None, drain_timeout=None, clock=clock)
    socket.writable.clear()
    outbox.put_nowait(frame("in flight"))
    for _ in range(50):
        outbox.put_nowait(frame("z" * 10_000))
        clock.now += 3600
    assert owner.stalls == []
    assert owner.core.drain_by is None
    socket.writable.set()
    await wait_idle(outbox)
    assert len(socket.written) == 51

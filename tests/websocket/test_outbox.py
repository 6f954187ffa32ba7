"""The per-connection outbox: eager writes, hand-over to a writer task, order, slow consumers."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from typing import Any

import pytest

from wirehall.errors import WebSocketDisconnectError
from wirehall.types import Message
from wirehall.websocket._outbox import Outbox, SlowConsumerPolicy


class Owner:
    def __init__(self) -> None:
        self.failed: list[BaseException] = []
        self.overflows: list[int] = []

    def _outbox_failed(self, error: BaseException) -> None:
        self.failed.append(error)

    def _outbox_overflow(self, depth: int) -> None:
        self.overflows.append(depth)


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
    outbox = Outbox(socket.send, owner, max_queue, policy)
    outbox.open()
    return outbox, socket, owner


async def wait_idle(outbox: Outbox) -> None:
    writer = outbox._writer
    if writer is not None:
        await asyncio.wait((writer,), timeout=2)
    assert not outbox.is_backed_up


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
    outbox = Outbox(socket.send, owner)
    outbox.put_nowait(frame("early"))
    assert socket.written == []
    outbox.open()
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
    await asyncio.sleep(0.01)
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
    await asyncio.sleep(0.01)
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

    outbox = Outbox(send, Owner())
    outbox.open()
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

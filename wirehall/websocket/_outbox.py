"""The per-connection outbound queue: broadcasting never awaits a socket.

There is no writer task per idle connection. A message for an idle connection is
written *eagerly*: the server's ASGI `send(message)` coroutine is stepped once, right
here. With uvicorn that step finishes (the frame went to the transport) unless the
transport is paused because the peer is not reading. Only then is the started
coroutine handed to a writer task, which finishes it, drains the messages queued
meanwhile, and exits. So a writer task exists only while a socket is backed up, and the
queue (a deque) only while something waits in it. See docs/websocket-outbox.md.

A connection is a slow consumer when more than `max_queue` messages wait (the policy
decides), when the messages waiting add up to more than `max_pending_bytes`, or when
its output has not drained for `drain_timeout` seconds (the last two always close it).
The drain deadline costs nothing while the socket keeps up: one `loop.call_later`
timer exists only while the socket is backed up.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Generator
from types import CoroutineType
from typing import Any, Protocol

from wirehall.errors import WebSocketDisconnectError
from wirehall.types import Message, Send
from wirehall.websocket.codes import CloseCode

__all__ = [
    "DEFAULT_DRAIN_TIMEOUT",
    "DEFAULT_MAX_PENDING_BYTES",
    "Outbox",
    "OutboxOwner",
    "SlowConsumerPolicy",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_PENDING_BYTES = 4 * 1024 * 1024
"""Four of the largest messages a route takes by default (1 MiB), or about a thousand
chat-sized frames: far more than a healthy client falls behind in a pause, little
enough that thousands of stalled peers cannot hold gigabytes."""
DEFAULT_DRAIN_TIMEOUT = 30.0
"""Seconds a connection's output may stay backed up without draining."""

_Step = Coroutine[Any, Any, Any] | Generator[Any, Any, Any]


class SlowConsumerPolicy(enum.Enum):
    """What to do when a connection's outbound queue is full."""

    CLOSE = "close"
    """Close the connection with 1013 (try again later) and drop what it had queued."""
    DROP_OLDEST = "drop_oldest"
    """Drop the oldest queued broadcast to make room."""
    DROP_NEWEST = "drop_newest"
    """Drop the broadcast that did not fit."""


class OutboxOwner(Protocol):
    """What the outbox tells the connection it belongs to."""

    def _outbox_failed(self, error: BaseException) -> None: ...

    def _outbox_overflow(self, depth: int) -> None: ...

    def _outbox_stalled(self, reason: str) -> None: ...


class _Pending:
    """A message whose sender awaits its writing (`Outbox.put`)."""

    __slots__ = ("future", "message")

    def __init__(self, message: Message, future: asyncio.Future[None]) -> None:
        self.message = message
        self.future = future


def _size(item: Message | _Pending) -> int:
    """What a queued message puts on the wire, roughly: its payload's length (text in characters)."""
    message = item.message if isinstance(item, _Pending) else item
    data: str | bytes | None = message.get("text")
    if data is None:
        data = message.get("bytes")
    return len(data) if data is not None else 0


class _Resume:
    """Awaiting this finishes a `send` coroutine that was already stepped once.

    Its `__await__` does what `yield from` delegation does: it hands each future the
    coroutine yields up to the task, and passes back what the task sends or throws.
    """

    __slots__ = ("first", "step")

    def __init__(self, step: _Step, first: Any) -> None:
        self.step = step
        self.first = first

    def __await__(self) -> Generator[Any, Any, Any]:
        step = self.step
        value = self.first
        self.first = None
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                step.close()
                raise
            except BaseException as exc:  # noqa: BLE001  # delegated to the coroutine, as `yield from` does
                try:
                    value = step.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    value = step.send(sent)
                except StopIteration as stop:
                    return stop.value


def _stepper(awaitable: Awaitable[None]) -> _Step:
    if isinstance(awaitable, Coroutine):
        return awaitable  # a coroutine steps like a generator
    return awaitable.__await__()  # generator-based awaitables


class Outbox:
    """Bounded, ordered outbound messages of one connection.

    `put_nowait` (broadcasts) never waits; `put` waits until its message was written,
    keeping order with what was queued before it. Over `max_queue` waiting messages
    the `policy` decides: close the connection (the owner is told), or drop a message.
    Over `max_pending_bytes` waiting, or backed up for `drain_timeout` seconds without
    draining once, the connection is closed whatever the policy (None turns either off).
    """

    __slots__ = (
        "_busy",
        "_clock",
        "_closed",
        "_dead",
        "_deadline",
        "_drain_by",
        "_drain_timeout",
        "_max_bytes",
        "_max_queue",
        "_opened",
        "_owner",
        "_pending_bytes",
        "_policy",
        "_queue",
        "_send",
        "_writer",
    )

    def __init__(
        self,
        send: Send,
        owner: OutboxOwner,
        max_queue: int = 1024,
        policy: SlowConsumerPolicy = SlowConsumerPolicy.CLOSE,
        *,
        max_pending_bytes: int | None = DEFAULT_MAX_PENDING_BYTES,
        drain_timeout: float | None = DEFAULT_DRAIN_TIMEOUT,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._send = send
        self._owner = owner
        self._max_queue = max_queue
        self._policy = policy
        self._max_bytes = max_pending_bytes
        self._drain_timeout = drain_timeout
        self._clock = clock  # None: the event loop's clock
        self._queue: deque[Message | _Pending] | None = None
        self._pending_bytes = 0
        self._writer: asyncio.Task[None] | None = None
        # While backed up: when the output must have drained, and the timer that checks it.
        self._drain_by: float | None = None
        self._deadline: asyncio.TimerHandle | None = None
        # Busy until `open()`: messages for a connection not yet accepted wait in the queue.
        self._busy = True
        self._opened = False
        self._closed = False  # no more broadcasts (closing or dead)
        self._dead = False  # aborted or the socket failed: nothing more is written

    @property
    def depth(self) -> int:
        """How many messages wait to be written."""
        return len(self._queue) if self._queue else 0

    @property
    def pending_bytes(self) -> int:
        """The payload bytes (characters for text) of the messages waiting to be written."""
        return self._pending_bytes

    @property
    def is_backed_up(self) -> bool:
        """Whether a write is in flight in a writer task (the socket is not keeping up)."""
        return self._writer is not None

    def configure(
        self,
        max_queue: int,
        policy: SlowConsumerPolicy,
        *,
        max_pending_bytes: int | None = DEFAULT_MAX_PENDING_BYTES,
        drain_timeout: float | None = DEFAULT_DRAIN_TIMEOUT,
    ) -> None:
        """Set the limits and the slow-consumer policy (the service does this on register)."""
        self._max_queue = max_queue
        self._policy = policy
        self._max_bytes = max_pending_bytes
        self._drain_timeout = drain_timeout

    def open(self) -> None:
        """The handshake was accepted: write what was queued before it, then write directly."""
        if self._dead:
            return
        self._busy = False
        self._opened = True
        if self._queue:
            self._flush()

    # writing -----------------------------------------------------------------

    def put_nowait(self, message: Message) -> None:
        """Write `message` now if the socket takes it, else queue it. Never waits."""
        if self._busy or self._closed:
            self._queue_nowait(message)
            return
        awaitable = self._send(message)
        step = awaitable if type(awaitable) is CoroutineType else _stepper(awaitable)
        try:
            first = step.send(None)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001  # any error from the server's send means the socket is gone
            self._fail(exc)
            return
        self._hand_over(step, first, None)

    def _queue_nowait(self, message: Message) -> None:
        if self._closed:
            return
        queue = self._queue
        if queue is None:
            queue = self._queue = deque()
        elif len(queue) >= self._max_queue and not self._overflow(queue):
            return
        self._admit(queue, message)

    async def put(self, message: Message) -> None:
        """Write `message` after everything queued before it; return once it was written.

        Raises:
            WebSocketDisconnectError: the connection closed before the message was written.
        """
        if self._dead:
            raise WebSocketDisconnectError(CloseCode.ABNORMAL, "the connection is closed")
        if self._busy:
            future = asyncio.get_running_loop().create_future()
            queue = self._queue
            if queue is None:
                queue = self._queue = deque()
            if not self._admit(queue, _Pending(message, future)):
                raise WebSocketDisconnectError(CloseCode.TRY_AGAIN_LATER, "closed as a slow consumer")
            await future
            return
        self._busy = True
        try:
            await self._send(message)
        except Exception as exc:
            self._fail(exc)
            raise WebSocketDisconnectError(CloseCode.ABNORMAL, "the connection was lost") from exc
        finally:
            if not self._dead:
                self._busy = False
                if self._queue:
                    self._flush()
                if not self._busy and self._drain_by is not None:
                    self._disarm()  # drained

    def _admit(self, queue: deque[Message | _Pending], item: Message | _Pending) -> bool:
        """Queue `item`, unless this makes the connection a slow consumer (then it is closed)."""
        size = _size(item)
        budget = self._max_bytes
        # one message larger than the budget may wait alone
        if budget is not None and queue and self._pending_bytes + size > budget:
            self._stall(f"more than {budget} bytes waited to be written")
            return False
        if self._opened:  # a write is in flight: the socket is backed up
            drain_by = self._drain_by
            if drain_by is None:
                self._arm()
            elif self._now() >= drain_by:
                self._stall(f"its output did not drain for {self._drain_timeout:g}s")
                return False
        queue.append(item)
        self._pending_bytes += size
        return True

    def _overflow(self, queue: deque[Message | _Pending]) -> bool:
        """Apply the policy to a full queue; True when the new message may still be queued."""
        policy = self._policy
        if policy is SlowConsumerPolicy.DROP_NEWEST:
            return False
        if policy is SlowConsumerPolicy.DROP_OLDEST:
            for index, item in enumerate(queue):
                if type(item) is not _Pending:
                    del queue[index]
                    self._pending_bytes -= _size(item)
                    return True
            return False
        depth = len(queue)
        self.abort()
        self._owner._outbox_overflow(depth)
        return False

    def _flush(self) -> None:
        """Write queued messages eagerly until one has to wait."""
        queue = self._queue
        send = self._send
        while queue and not self._busy and not self._dead:
            item = queue.popleft()
            self._pending_bytes -= _size(item)
            pending = item if type(item) is _Pending else None
            if pending is not None:
                if pending.future.done():  # its sender was cancelled
                    continue
                message = pending.message
            else:
                message = item  # type: ignore[assignment]
            try:
                awaitable = send(message)
                step = awaitable if type(awaitable) is CoroutineType else _stepper(awaitable)
                first = step.send(None)
            except StopIteration:
                if pending is not None:
                    pending.future.set_result(None)
                continue
            except Exception as exc:  # noqa: BLE001  # the socket is gone
                if pending is not None:
                    _fail_pending(pending, exc)
                self._fail(exc)
                return
            self._hand_over(step, first, pending)
            return

    def _hand_over(self, step: _Step, first: Any, pending: _Pending | None) -> None:
        self._busy = True
        if self._queue is None:
            self._queue = deque()
        if self._drain_by is None:
            self._arm()
        self._writer = asyncio.get_running_loop().create_task(
            self._write_backlog(_Resume(step, first), pending)
        )

    async def _write_backlog(self, first: _Resume, pending: _Pending | None) -> None:
        queue = self._queue
        assert queue is not None
        send = self._send
        try:
            await first
            if pending is not None and not pending.future.done():
                pending.future.set_result(None)
            while queue:
                item = queue.popleft()
                self._pending_bytes -= _size(item)
                if type(item) is _Pending:
                    pending = item
                    if pending.future.done():
                        continue
                    await send(pending.message)
                    if not pending.future.done():
                        pending.future.set_result(None)
                else:
                    pending = None
                    await send(item)  # type: ignore[arg-type]
        except asyncio.CancelledError:
            if pending is not None:
                _fail_pending(pending, None)
            raise
        except Exception as exc:  # noqa: BLE001  # the socket died under a queued write
            if pending is not None:
                _fail_pending(pending, exc)
            self._fail(exc)
        finally:
            if self._writer is asyncio.current_task():
                self._writer = None
                if not self._dead:
                    self._busy = False
                    self._disarm()  # drained

    # the drain deadline ----------------------------------------------------------

    def _now(self) -> float:
        clock = self._clock
        return clock() if clock is not None else asyncio.get_running_loop().time()

    def _arm(self) -> None:
        """The socket just backed up: it must drain within `drain_timeout`."""
        timeout = self._drain_timeout
        if timeout is None:
            return
        self._drain_by = self._now() + timeout
        self._deadline = asyncio.get_running_loop().call_later(timeout, self._check_drained)

    def _disarm(self) -> None:
        self._drain_by = None
        deadline, self._deadline = self._deadline, None
        if deadline is not None:
            deadline.cancel()

    def _check_drained(self) -> None:
        # the timer: a backed-up connection that gets no new message is caught here
        self._deadline = None
        drain_by = self._drain_by
        if drain_by is None or self._dead:
            return
        left = drain_by - self._now()
        if left > 0:  # the clock says not yet (an injected clock)
            self._deadline = asyncio.get_running_loop().call_later(left, self._check_drained)
            return
        self._stall(f"its output did not drain for {self._drain_timeout:g}s")

    def _stall(self, reason: str) -> None:
        depth, size = self.depth, self._pending_bytes
        self.abort()
        self._owner._outbox_stalled(f"{reason} ({depth} messages, {size} bytes waiting)")

    # ending --------------------------------------------------------------------

    def close(self) -> None:
        """Take no more broadcasts; queued messages and later `put` calls are still written."""
        self._closed = True

    def abort(self) -> None:
        """Drop what is queued and stop the writer; waiting `put` calls get a disconnect."""
        self._closed = True
        self._dead = True
        self._busy = True
        self._disarm()
        writer, self._writer = self._writer, None
        if writer is not None and not writer.done() and writer is not asyncio.current_task():
            writer.cancel()
        queue, self._queue = self._queue, None
        self._pending_bytes = 0
        if queue:
            for item in queue:
                if type(item) is _Pending:
                    _fail_pending(item, None)

    def _fail(self, error: BaseException) -> None:
        if self._dead:
            return
        logger.debug("write failed, the connection is gone: %r", error)
        self.abort()
        self._owner._outbox_failed(error)


def _fail_pending(pending: _Pending, error: BaseException | None) -> None:
    future = pending.future
    if not future.done():
        disconnect = WebSocketDisconnectError(CloseCode.ABNORMAL, "the connection closed before the write")
        if error is not None:
            disconnect.__cause__ = error
        future.set_exception(disconnect)

"""The per-connection outbound queue: broadcasting never awaits a socket.

There is no writer task per idle connection. A message for an idle connection is
written *eagerly*: the server's ASGI `send(message)` is started right here
(`_server_seam.start_send`). With uvicorn that step finishes (the frame went to the
transport) unless the transport is paused because the peer is not reading. Only then is
the started write handed to a writer task, which finishes it, drains the messages queued
meanwhile, and exits. So a writer task exists only while a socket is backed up, and the
queue (a deque) only while something waits in it. See docs/websocket-outbox.md.

What to do with each message (write now, queue, drop, evict) is the connection core's
decision (`ConnectionCore.offer`, in `_core.py`, with the slow-consumer limits and the
drain deadline); this module carries it out: the deque, the writer task and the one
`loop.call_later` timer that exists only while the socket is backed up.

A little over 400 lines: `OutboxBase` (the queue, the drain deadline, eviction, shared with
the native outbox in `_native.py`) and the ASGI writer belong together.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from wirehall.errors import WebSocketDisconnectError
from wirehall.types import Message, Send
from wirehall.websocket._core import (
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_MAX_PENDING_BYTES,
    ConnectionCore,
    Outgoing,
    OutputLimits,
    SlowConsumerPolicy,
)
from wirehall.websocket._server_seam import SendInFlight, start_send
from wirehall.websocket.codes import CloseCode

__all__ = [
    "DEFAULT_DRAIN_TIMEOUT",
    "DEFAULT_MAX_PENDING_BYTES",
    "Outbox",
    "OutboxBase",
    "OutboxReport",
    "Pending",
    "SlowConsumerPolicy",
    "fail_pending",
    "queued_size",
]

logger = logging.getLogger(__name__)

_WRITE, _QUEUE, _DROP, _DROP_OLDEST, _EVICT_FULL = (
    Outgoing.WRITE,
    Outgoing.QUEUE,
    Outgoing.DROP,
    Outgoing.DROP_OLDEST,
    Outgoing.EVICT_FULL,
)


OutboxReport = Callable[[Outgoing | None, str, BaseException | None], None]
"""How the outbox tells its connection that it stopped writing (the backlog is dropped):
`(Outgoing.EVICT_FULL, why, None)` more than `max_queue` messages waited (policy CLOSE);
`(Outgoing.EVICT_STALLED, why, None)` over the byte budget or past the drain deadline;
`(None, "", error)` the socket failed under a write. One callable, not an object of
callbacks: it is kept per connection, and idle connections are many."""


class Pending:
    """A message whose sender awaits its writing (`Outbox.put`)."""

    __slots__ = ("future", "message")

    def __init__(self, message: Message, future: asyncio.Future[None]) -> None:
        self.message = message
        self.future = future


def queued_size(item: Message | Pending) -> int:
    """What a queued message puts on the wire, roughly: its payload's length (text in characters)."""
    message = item.message if isinstance(item, Pending) else item
    data: str | bytes | None = message.get("text")
    if data is None:
        data = message.get("bytes")
    return len(data) if data is not None else 0


class OutboxBase:
    """What both outboxes share: the queue, the drain deadline, eviction and the end.

    `Outbox` (any ASGI server) and `NativeOutbox` (`_native.py`, wirehall's own protocol)
    differ only in how a message is written.
    """

    __slots__ = ("_clock", "_core", "_deadline", "_direct", "_queue", "_report")

    def __init__(
        self, core: ConnectionCore, report: OutboxReport | None, clock: Callable[[], float] | None
    ) -> None:
        self._core = core
        self._report = report
        self._clock = clock  # None: the event loop's clock
        self._queue: deque[Message | Pending] | None = None
        self._deadline: asyncio.TimerHandle | None = None  # while backed up: checks the drain
        # the native path: the transport, while a frame may be written to it with no other
        # check (see `NativeOutbox`); always None through plain ASGI
        self._direct: Any = None

    def put_nowait(self, message: Message) -> None:
        """Write `message` now if the connection takes it, else queue it. Never waits."""
        raise NotImplementedError

    @property
    def depth(self) -> int:
        """How many messages wait to be written."""
        return len(self._queue) if self._queue else 0

    @property
    def pending_bytes(self) -> int:
        """The payload bytes (characters for text) of the messages waiting to be written."""
        return self._core.pending_bytes

    def configure(
        self,
        max_queue: int,
        policy: SlowConsumerPolicy,
        *,
        max_pending_bytes: int | None = DEFAULT_MAX_PENDING_BYTES,
        drain_timeout: float | None = DEFAULT_DRAIN_TIMEOUT,
    ) -> None:
        """Set the limits and the slow-consumer policy."""
        self._core.set_limits(OutputLimits(max_queue, policy, max_pending_bytes, drain_timeout))

    def abort(self) -> None:
        """Drop what is queued; waiting `put` calls get a disconnect."""
        self._core.abandon()
        deadline, self._deadline = self._deadline, None
        if deadline is not None:
            deadline.cancel()
        queue, self._queue = self._queue, None
        if queue:
            for item in queue:
                if type(item) is Pending:
                    fail_pending(item, None)

    def _enqueue(self, item: Message | Pending) -> None:
        queue = self._queue
        if queue is None:
            queue = self._queue = deque()
        queue.append(item)
        if self._deadline is None and self._core.drain_by is not None:
            self._start_timer()

    def _drop_oldest(self) -> bool:
        """Make room by dropping the oldest broadcast; False when only awaited messages wait."""
        queue = self._queue
        if queue:
            for index, item in enumerate(queue):
                if type(item) is not Pending:
                    del queue[index]
                    self._core.dequeued(queued_size(item))
                    return True
        return False

    # the drain deadline ----------------------------------------------------------

    def _now(self) -> float:
        clock = self._clock
        return clock() if clock is not None else asyncio.get_running_loop().time()

    def _start_timer(self) -> None:
        left = self._core.deadline_left(self._now())
        if left is not None:
            self._deadline = asyncio.get_running_loop().call_later(max(left, 0.0), self._check_drained)

    def _drained(self) -> None:
        self._core.drained()
        deadline = self._deadline
        if deadline is not None:
            self._deadline = None
            deadline.cancel()

    def _check_drained(self) -> None:
        # the timer: a backed-up connection that gets no new message is caught here
        self._deadline = None
        left = self._core.deadline_left(self._now())
        if left is None:
            return
        if left > 0:  # the clock says not yet (an injected clock)
            self._deadline = asyncio.get_running_loop().call_later(left, self._check_drained)
            return
        self._core.eviction = self._core.drain_reason()
        self._evict(Outgoing.EVICT_STALLED)

    def _evict(self, verdict: Outgoing) -> None:
        depth, size = self.depth, self._core.pending_bytes
        reason = self._core.eviction
        self.abort()
        report = self._report
        if report is None:
            return
        if verdict is _EVICT_FULL:
            report(verdict, f"{depth} messages queued, the limit", None)
        else:
            report(verdict, f"{reason} ({depth} messages, {size} bytes waiting)", None)

    # ending --------------------------------------------------------------------

    def close(self) -> None:
        """Take no more broadcasts; queued messages and later `put` calls are still written."""
        self._core.stop_broadcasts()

    def _fail(self, error: BaseException) -> None:
        if self._core.dead:
            return
        logger.debug("the connection is gone (a write failed or the transport was lost): %r", error)
        self.abort()
        if self._report is not None:
            self._report(None, "", error)


class Outbox(OutboxBase):
    """Bounded, ordered outbound messages of one connection.

    `put_nowait` (broadcasts) never waits; `put` waits until its message was written,
    keeping order with what was queued before it. The connection core decides what
    happens to each message (`ConnectionCore.offer`); a slow consumer's backlog is
    dropped and the connection told (`OutboxReport`).
    """

    __slots__ = ("_send", "_writer")

    def __init__(
        self,
        send: Send,
        core: ConnectionCore,
        report: OutboxReport | None = None,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(core, report, clock)
        self._send = send
        self._writer: asyncio.Task[None] | None = None

    @property
    def is_backed_up(self) -> bool:
        """Whether a write is in flight in a writer task (the socket is not keeping up)."""
        return self._writer is not None

    def open(self) -> None:
        """The core accepted the handshake: write what was queued before it, then write directly."""
        if self._queue:
            self._flush()

    # writing -----------------------------------------------------------------

    def put_nowait(self, message: Message) -> None:
        """Write `message` now if the socket takes it, else queue it. Never waits."""
        core = self._core
        if core.idle:  # the hot path: nothing in flight, nothing queued
            try:
                in_flight = start_send(self._send, message)
            except Exception as exc:  # noqa: BLE001  # any error from the server's send means the socket is gone
                self._fail(exc)
                return
            if in_flight is not None:
                self._hand_over(in_flight, None)
            return
        verdict = core.offer(queued_size(message), self._now())
        if verdict is _QUEUE:
            self._enqueue(message)
        elif verdict is _WRITE:
            self._write_eagerly(message, None)
        elif verdict is _DROP_OLDEST:
            if self._drop_oldest():
                self.put_nowait(message)
        elif verdict is not _DROP:
            self._evict(verdict)

    def _write_eagerly(self, message: Message, pending: Pending | None) -> bool:
        """Start writing `message`; True when it is still in flight (handed to a writer task)."""
        try:
            in_flight = start_send(self._send, message)
        except Exception as exc:  # noqa: BLE001  # any error from the server's send means the socket is gone
            if pending is not None:
                fail_pending(pending, exc)
            self._fail(exc)
            return True
        if in_flight is None:
            if pending is not None:
                pending.future.set_result(None)
            return False
        self._hand_over(in_flight, pending)
        return True

    async def put(self, message: Message) -> None:
        """Write `message` after everything queued before it; return once it was written.

        Raises:
            WebSocketDisconnectError: the connection closed before the message was written.
        """
        core = self._core
        # the hot path (a reply on a connection that keeps up) asks the core nothing more
        verdict = _WRITE if core.idle else core.offer(queued_size(message), self._now(), awaited=True)
        if verdict is _DROP:
            raise WebSocketDisconnectError(CloseCode.ABNORMAL, "the connection is closed")
        if verdict is _QUEUE:
            future = asyncio.get_running_loop().create_future()
            self._enqueue(Pending(message, future))
            await future
            return
        if verdict is not _WRITE:
            self._evict(verdict)
            raise WebSocketDisconnectError(CloseCode.TRY_AGAIN_LATER, "closed as a slow consumer")
        # core.write_started() and, after the write, core.drained() as attributes: the
        # per-message path of an echo; no deadline runs for a write that was not backed up
        core.writing = True
        core.idle = False
        try:
            await self._send(message)
        except Exception as exc:
            self._fail(exc)
            raise WebSocketDisconnectError(CloseCode.ABNORMAL, "the connection was lost") from exc
        finally:
            if not core.dead:
                if self._queue:
                    self._flush()
                elif self._deadline is None and core.drain_by is None:
                    core.writing = False
                    core.idle = core.broadcasts
                else:
                    self._drained()

    def _flush(self) -> None:
        """Write queued messages eagerly until one has to wait."""
        queue = self._queue
        core = self._core
        core.write_finished()
        while queue and not core.dead:
            item = queue.popleft()
            core.dequeued(queued_size(item))
            if type(item) is Pending:
                if item.future.done():  # its sender was cancelled
                    continue
                if self._write_eagerly(item.message, item):
                    return
            elif self._write_eagerly(item, None):  # type: ignore[arg-type]
                return
        if not core.dead:
            self._drained()

    def _hand_over(self, in_flight: SendInFlight, pending: Pending | None) -> None:
        self._core.write_started(self._now())
        if self._queue is None:
            self._queue = deque()
        if self._deadline is None and self._core.drain_by is not None:
            self._start_timer()
        self._writer = asyncio.get_running_loop().create_task(self._write_backlog(in_flight, pending))

    async def _write_backlog(self, first: SendInFlight, pending: Pending | None) -> None:
        queue = self._queue
        assert queue is not None
        send = self._send
        core = self._core
        try:
            await first
            if pending is not None and not pending.future.done():
                pending.future.set_result(None)
            while queue:
                item = queue.popleft()
                core.dequeued(queued_size(item))
                if type(item) is Pending:
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
                fail_pending(pending, None)
            raise
        except Exception as exc:  # noqa: BLE001  # the socket died under a queued write
            if pending is not None:
                fail_pending(pending, exc)
            self._fail(exc)
        finally:
            if self._writer is asyncio.current_task():
                self._writer = None
                if not core.dead:
                    self._drained()

    # ending --------------------------------------------------------------------

    def abort(self) -> None:
        """Drop what is queued and stop the writer; waiting `put` calls get a disconnect."""
        writer, self._writer = self._writer, None
        if writer is not None and not writer.done() and writer is not asyncio.current_task():
            writer.cancel()
        super().abort()


def fail_pending(pending: Pending, error: BaseException | None) -> None:
    future = pending.future
    if not future.done():
        disconnect = WebSocketDisconnectError(CloseCode.ABNORMAL, "the connection closed before the write")
        if error is not None:
            disconnect.__cause__ = error
        future.set_exception(disconnect)

"""The app's side of the native WebSocket path: what it asks of the server, and its outbox.

Under `wirehall run` (uvicorn with `wirehall.server.websocket.WebSocketProtocol`) a
WebSocket scope carries `scope["extensions"]["wirehall.websocket"]["socket"]`: the
connection's protocol object, which takes ready frames (`write`) and can hand incoming
messages to a callback object instead of the ASGI `receive` queue (`set_reader`). Under
any other server the extension is absent and everything goes through plain ASGI.

`NativeOutbox` is the `Outbox` of the native path: the same decisions (the connection
core's `offer`: write, queue, drop, evict), but a write is `transport.write` of a frame
built once per payload (`_frames.frame_of`), with no coroutine and no task. When the
transport pauses (the peer is not reading), messages queue and go out, in order, when it
resumes; the drain deadline and the byte budget evict a peer that stays stuck.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from wirehall.errors import WebSocketDisconnectError
from wirehall.types import Message, Scope
from wirehall.websocket._core import (
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_MAX_PENDING_BYTES,
    ConnectionCore,
    Outgoing,
    OutputLimits,
    SlowConsumerPolicy,
)
from wirehall.websocket._frames import Broadcast, frame_of
from wirehall.websocket.codes import CloseCode

__all__ = [
    "EXTENSION",
    "NativeOutbox",
    "NativeReader",
    "NativeSocket",
    "defer_until_closed",
    "native_socket",
    "serve_by_callback",
]

logger = logging.getLogger(__name__)

EXTENSION = "wirehall.websocket"
"""The key of the native path's entry in `scope["extensions"]`."""

_WRITE, _QUEUE, _DROP, _DROP_OLDEST, _EVICT_FULL = (
    Outgoing.WRITE,
    Outgoing.QUEUE,
    Outgoing.DROP,
    Outgoing.DROP_OLDEST,
    Outgoing.EVICT_FULL,
)


class NativeReader(Protocol):
    """What receives a native connection's messages once it is set as its reader."""

    def message(self, data: str | bytes) -> None:
        """A whole message arrived (`str`: text, `bytes`: binary)."""

    def closed(self, code: int, reason: str) -> None:
        """The connection closed (either side, or lost); called once, last."""


class NativeSocket(Protocol):
    """What the native server path offers a connection (see `wirehall.server.websocket`)."""

    deflate_bits: int
    """The server-to-client compression window (0: no compression was negotiated)."""
    closed_with: int | None
    """The close code the app was told (None while the connection is open)."""
    transport: Any
    """The connection's asyncio transport."""
    paused: bool
    """Whether the transport's write buffer is over its high-water mark (the peer is slow)."""

    def write(self, frame: bytes) -> None:
        """Write a ready frame now (ignored once the connection is closing or gone)."""

    def send_close(self, code: int, reason: str) -> None:
        """Write a close frame after what was written; the connection is closing."""

    def set_writer(self, writable: Callable[[bool], None] | None) -> None:
        """Call `writable(True)` when a paused transport resumes, `writable(False)` when the
        connection is gone."""

    def set_reader(self, reader: NativeReader) -> None:
        """From now on hand messages to `reader` instead of the ASGI `receive` (and what waited
        there too); the connection stays open after the ASGI app returns."""

    def pause_reading(self) -> None:
        """Stop reading from the peer (too much unhandled input)."""

    def resume_reading(self) -> None:
        """Read from the peer again."""

    def start(
        self, coro: Coroutine[Any, Any, None], context: contextvars.Context | None = None
    ) -> asyncio.Task[None]:
        """Run `coro` in a task the server waits for when it shuts down."""
        ...

    def abort(self) -> None:
        """Reset the TCP connection now (SO_LINGER 0): for a peer that takes nothing."""


def native_socket(scope: Scope) -> NativeSocket | None:
    """The native socket of a WebSocket scope, or None under a plain ASGI server."""
    extensions = scope.get("extensions")
    if not extensions:
        return None
    entry = extensions.get(EXTENSION)
    if entry is None:
        return None
    sock: NativeSocket | None = entry.get("socket")
    return sock


def serve_by_callback(scope: Scope) -> list[Callable[[], None]]:
    """Mark the connection as served by callback from now on (its ASGI call returns early).

    Returns the list of callbacks to run, in order, when the connection has ended
    (`defer_until_closed` adds to it); the caller runs them.
    """
    after: list[Callable[[], None]] = []
    scope["extensions"][EXTENSION]["after"] = after
    return after


def defer_until_closed(scope: Scope, callback: Callable[[], None]) -> bool:
    """Run `callback` when the connection ends, if it outlives its ASGI call; True if deferred.

    On the native path a controller's connection is served by callback once accepted, so
    its ASGI call returns while the connection stays open. ASGI middleware that does
    something when a WebSocket connection ends (give back a per-address slot, stop a
    timer) calls this after the app returns, and does it at once only when it returns
    False. Under a plain ASGI server it is always False.
    """
    extensions = scope.get("extensions")
    entry = extensions.get(EXTENSION) if extensions else None
    after: list[Callable[[], None]] | None = entry.get("after") if entry else None
    if after is None:
        return False
    after.append(callback)
    return True


class _Pending:
    """A message whose sender awaits its writing (`NativeOutbox.put`)."""

    __slots__ = ("future", "message")

    def __init__(self, message: Message, future: asyncio.Future[None]) -> None:
        self.message = message
        self.future = future


def _size(item: Message | _Pending) -> int:
    message = item.message if type(item) is _Pending else item
    data: str | bytes | None = message.get("text")  # type: ignore[union-attr]
    if data is None:
        data = message.get("bytes")  # type: ignore[union-attr]
    return len(data) if data is not None else 0


OutboxReport = Callable[[Outgoing | None, str, BaseException | None], None]


class NativeOutbox:
    """`Outbox` for the native path: frames straight to the transport, queued only while it is paused."""

    __slots__ = ("_bits", "_clock", "_core", "_deadline", "_queue", "_report", "_sock", "_transport_write")

    def __init__(
        self,
        sock: NativeSocket,
        core: ConnectionCore,
        report: OutboxReport | None = None,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._sock = sock
        self._core = core
        self._report = report
        self._clock = clock
        self._bits = 0
        self._transport_write: Callable[[bytes], None] = sock.write
        self._queue: deque[Message | _Pending] | None = None
        self._deadline: asyncio.TimerHandle | None = None
        sock.set_writer(self._writable)

    @property
    def depth(self) -> int:
        """How many messages wait to be written."""
        return len(self._queue) if self._queue else 0

    @property
    def pending_bytes(self) -> int:
        """The payload bytes (characters for text) of the messages waiting to be written."""
        return self._core.pending_bytes

    @property
    def is_backed_up(self) -> bool:
        """Whether the transport is paused with messages owed."""
        return self._core.writing and not self._core.dead and self._core.accepted

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

    def open(self) -> None:
        """The handshake was accepted: write what was queued before it, then write directly."""
        self._bits = self._sock.deflate_bits
        # the transport's own write (one call less per delivery): the hot path checks
        # `closed_with` itself
        self._transport_write = self._sock.transport.write
        if self._sock.paused:
            self._backed_up()
        elif self._queue:
            self._flush()

    # writing -----------------------------------------------------------------

    def put_nowait(self, message: Message) -> None:
        """Write `message` now if the transport takes it, else queue it. Never waits."""
        core = self._core
        if core.idle:  # the hot path: one frame (shared by a broadcast), one transport write
            sock = self._sock
            if sock.closed_with is not None:  # closed, the app not told yet (a function endpoint)
                return
            frames = message.frames if type(message) is Broadcast else None
            built = frames.get(self._bits) if frames is not None else None
            self._transport_write(built if built is not None else frame_of(message, self._bits))
            if sock.paused:
                self._backed_up()
            return
        verdict = core.offer(_size(message), self._now())
        if verdict is _QUEUE:
            self._enqueue(message)
        elif verdict is _WRITE:
            self._write(message)
        elif verdict is _DROP_OLDEST:
            if self._drop_oldest():
                self.put_nowait(message)
        elif verdict is not _DROP:
            self._evict(verdict)

    async def put(self, message: Message) -> None:
        """Write `message` after everything queued before it; return once it was written.

        Raises:
            WebSocketDisconnectError: the connection closed before the message was written.
        """
        core = self._core
        verdict = _WRITE if core.idle else core.offer(_size(message), self._now(), awaited=True)
        if verdict is _WRITE:
            self._write(message)
            return
        if verdict is _DROP:
            raise WebSocketDisconnectError(CloseCode.ABNORMAL, "the connection is closed")
        if verdict is _QUEUE:
            future = asyncio.get_running_loop().create_future()
            self._enqueue(_Pending(message, future))
            await future
            return
        self._evict(verdict)
        raise WebSocketDisconnectError(CloseCode.TRY_AGAIN_LATER, "closed as a slow consumer")

    def _write(self, message: Message) -> None:
        sock = self._sock
        if message["type"] == "websocket.send":
            sock.write(frame_of(message, self._bits))
        else:  # websocket.close, after everything before it
            sock.send_close(int(message.get("code", CloseCode.NORMAL)), message.get("reason") or "")
        if sock.paused:
            self._backed_up()

    def _enqueue(self, item: Message | _Pending) -> None:
        queue = self._queue
        if queue is None:
            queue = self._queue = deque()
        queue.append(item)
        if self._deadline is None and self._core.drain_by is not None:
            self._start_timer()

    def _drop_oldest(self) -> bool:
        queue = self._queue
        if queue:
            for index, item in enumerate(queue):
                if type(item) is not _Pending:
                    del queue[index]
                    self._core.dequeued(_size(item))
                    return True
        return False

    def _backed_up(self) -> None:
        """The transport paused under a write: what follows queues until it resumes."""
        core = self._core
        if core.dead:
            return
        core.write_started(self._now())
        if self._deadline is None and core.drain_by is not None:
            self._start_timer()

    def _writable(self, alive: bool) -> None:
        # the server: the transport resumed (alive) or the connection is gone
        if not alive:
            self._fail(ConnectionResetError("the connection was lost"))
            return
        if not self._core.dead and self._core.accepted:
            self._flush()

    def _flush(self) -> None:
        """Write queued messages until the transport pauses again or nothing waits."""
        queue = self._queue
        core = self._core
        sock = self._sock
        core.write_finished()
        while queue and not core.dead:
            if sock.paused:
                core.write_started(self._now())
                return
            item = queue.popleft()
            core.dequeued(_size(item))
            if type(item) is _Pending:
                if not item.future.done():
                    self._write(item.message)
                    item.future.set_result(None)
            else:
                self._write(item)  # type: ignore[arg-type]
        if core.dead:
            return
        if sock.paused:
            core.write_started(self._now())
        else:
            self._drained()

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
        self._deadline = None
        left = self._core.deadline_left(self._now())
        if left is None:
            return
        if left > 0:
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

    def abort(self) -> None:
        """Drop what is queued; waiting `put` calls get a disconnect."""
        self._core.abandon()
        deadline, self._deadline = self._deadline, None
        if deadline is not None:
            deadline.cancel()
        queue, self._queue = self._queue, None
        if queue:
            for item in queue:
                if type(item) is _Pending and not item.future.done():
                    item.future.set_exception(
                        WebSocketDisconnectError(CloseCode.ABNORMAL, "the connection closed before the write")
                    )

    def _fail(self, error: BaseException) -> None:
        if self._core.dead:
            return
        logger.debug("the connection is gone: %r", error)
        self.abort()
        if self._report is not None:
            self._report(None, "", error)

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
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from wirehall.errors import WebSocketDisconnectError
from wirehall.types import Message, Scope
from wirehall.websocket._core import ConnectionCore, Outgoing
from wirehall.websocket._frames import frame_of
from wirehall.websocket._outbox import OutboxBase, OutboxReport, Pending, queued_size
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

    @property
    def direct_transport(self) -> Any:
        """The transport while whole frames may be written to it directly (open, not paused,
        the app not told of a close), else None; valid until `blocked()` is called."""

    def write(self, frame: bytes) -> None:
        """Write a ready frame now (ignored once the connection is closing or gone)."""

    def send_close(self, code: int, reason: str) -> None:
        """Write a close frame after what was written; the connection is closing."""

    def set_writer(
        self, writable: Callable[[bool], None] | None, blocked: Callable[[], None] | None = None
    ) -> None:
        """Call `writable(True)` when a paused transport resumes, `writable(False)` when the
        connection is gone, and `blocked()` each time direct writes must stop (the transport
        paused, or the connection is closing or gone)."""

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


class NativeOutbox(OutboxBase):
    """`Outbox` for the native path: frames straight to the transport, queued only while it is paused."""

    __slots__ = ("_bits", "_sock", "_transport_write")

    def __init__(
        self,
        sock: NativeSocket,
        core: ConnectionCore,
        report: OutboxReport | None = None,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(core, report, clock)
        self._sock = sock
        self._bits = 0
        self._transport_write: Callable[[bytes], None] = sock.write
        sock.set_writer(self._writable, self._sock_blocked)
        core.on_busy = self._stop_direct

    @property
    def is_backed_up(self) -> bool:
        """Whether the transport is paused with messages owed."""
        return self._core.writing and not self._core.dead and self._core.accepted

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
        direct = self._direct
        if direct is not None:  # one frame (a broadcast's is built once, see `deliver`), one write
            direct.write(frame_of(message, self._bits))
            return
        core = self._core
        if core.idle:
            sock = self._sock
            if sock.closed_with is not None:  # closed, the app not told yet (a function endpoint)
                return
            self._transport_write(frame_of(message, self._bits))
            if sock.paused:
                self._backed_up()
            else:  # writes go straight to the transport until something changes
                self._direct = sock.direct_transport
            return
        verdict = core.offer(queued_size(message), self._now())
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
        verdict = _WRITE if core.idle else core.offer(queued_size(message), self._now(), awaited=True)
        if verdict is _WRITE:
            self._write(message)
            return
        if verdict is _DROP:
            raise WebSocketDisconnectError(CloseCode.ABNORMAL, "the connection is closed")
        if verdict is _QUEUE:
            future = asyncio.get_running_loop().create_future()
            self._enqueue(Pending(message, future))
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

    def _backed_up(self) -> None:
        """The transport paused under a write: what follows queues until it resumes."""
        core = self._core
        if core.dead:
            return
        core.write_started(self._now())
        if self._deadline is None and core.drain_by is not None:
            self._start_timer()

    # direct writes: `_direct` is the transport while nothing else needs checking (the core
    # idle, the connection open, the transport not paused); whatever changes one of them
    # clears it, and the next message finds it again through `put_nowait`'s checks.

    def _stop_direct(self) -> None:
        # the core: the connection is no longer idle (a write backed up, closing, closed)
        self._direct = None

    def _sock_blocked(self) -> None:
        # the server: the transport paused (under a direct write, most often), or the
        # connection is closing or gone
        if self._direct is not None:
            self._direct = None
            if self._sock.paused:
                self._backed_up()

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
            core.dequeued(queued_size(item))
            if type(item) is Pending:
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

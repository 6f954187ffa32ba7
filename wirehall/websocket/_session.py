"""A controller's connection on the native path: a task only while there is work.

Through ASGI every connection holds a task blocked in `receive()` between messages. On
the native path the server hands each message to `NativeSession.message` (a plain
callback, no task): it is queued, and a task is started only if none runs; that task
handles what is queued, in order, one message at a time, and ends when nothing waits.
An idle connection holds this object, its handler and its core, and no task, no
coroutine frame, no future.

Backpressure: past `HIGH_WATER` unhandled messages the server stops reading from the
peer, and reads again once the task has caught up. The close is the last item queued,
so `on_disconnect` runs after every message that came before it.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from wirehall.di import ResolutionScope
from wirehall.types import Message
from wirehall.websocket._core import Incoming, Phase
from wirehall.websocket._native import EXTENSION, NativeSocket, serve_by_callback

__all__ = ["HIGH_WATER", "NativeSession"]

logger = logging.getLogger(__name__)

HIGH_WATER = 64
"""Unhandled messages at which reading from the peer pauses."""

_OPEN = Phase.OPEN


class _Closed:
    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason


class SessionRunner(Protocol):
    """What a session asks of the controller runner that started it."""

    async def handle(
        self,
        ws: Any,
        incoming: Incoming,
        resolver: ResolutionScope,
        context: Mapping[type[Any], Any],
        path_params: Mapping[str, Any],
    ) -> None: ...

    async def failed(self, ws: Any, exc: BaseException) -> int: ...

    async def finish(self, ws: Any, resolver: ResolutionScope, code: int) -> None: ...


class NativeSession:
    """Serves one controller connection by callback (see the module)."""

    __slots__ = (
        "_after",
        "_closed",
        "_context",
        "_inbox",
        "_path_params",
        "_reading",
        "_resolver",
        "_runner",
        "_sock",
        "_task",
        "_vars",
        "_waiters",
        "_ws",
    )

    def __init__(
        self,
        runner: SessionRunner,
        ws: Any,
        sock: NativeSocket,
        resolver: ResolutionScope,
        context: Mapping[type[Any], Any],
        path_params: Mapping[str, Any],
    ) -> None:
        self._runner = runner
        self._ws = ws
        self._sock = sock
        self._resolver = resolver
        self._context = context
        self._path_params = path_params
        self._inbox: deque[str | bytes | _Closed] | None = None  # only while messages wait
        self._task: asyncio.Task[None] | None = None
        self._reading = True
        self._vars: contextvars.Context | None = None
        self._after: list[Callable[[], None]] = []
        self._waiters: list[asyncio.Future[None]] | None = None  # `receive()` calls waiting for a message
        self._closed: _Closed | None = None  # the close, once the server reported it

    def begin(self) -> None:
        """Take the connection over from the ASGI task, which returns after this."""
        # the tasks started later see what the connection's task saw (log context, scope)
        self._vars = contextvars.copy_context()
        self._after = serve_by_callback(self._ws.scope)
        self._ws.run_in(None)
        self._ws.receive_from(self.receive)
        self._sock.set_reader(self)

    async def receive(self) -> Message:
        """The handler's ASGI `receive` from now on: the next queued message, as the server's
        `receive` would give it, so that a controller that reads the next message itself in
        `on_message` behaves as through ASGI. A close stays queued for `on_disconnect`, and
        every `receive()` after it gets the disconnect (never waits forever)."""
        while True:
            inbox = self._inbox
            if inbox:
                break
            closed = self._closed
            if closed is not None:  # the close was taken off the queue already (on_disconnect runs)
                return {"type": "websocket.disconnect", "code": closed.code, "reason": closed.reason}
            waiter = asyncio.get_running_loop().create_future()
            waiters = self._waiters
            if waiters is None:
                waiters = self._waiters = []
            waiters.append(waiter)
            try:
                await waiter
            finally:
                if not waiter.done():  # cancelled: take it off the list
                    waiters.remove(waiter)
        item = inbox[0]
        if type(item) is _Closed:
            return {"type": "websocket.disconnect", "code": item.code, "reason": item.reason}
        inbox.popleft()
        if not self._reading and len(inbox) < HIGH_WATER // 2:
            self._reading = True
            self._sock.resume_reading()
        if type(item) is str:
            return {"type": "websocket.receive", "text": item}
        return {"type": "websocket.receive", "bytes": item}

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    # the server's callbacks ------------------------------------------------------------

    def message(self, data: str | bytes) -> None:
        inbox = self._inbox
        if inbox is None:
            inbox = self._inbox = deque()
        inbox.append(data)
        if self._task is None:
            self._task = self._sock.start(self._work(), self._vars)
        elif len(inbox) >= HIGH_WATER and self._reading:
            self._reading = False
            self._sock.pause_reading()
        if self._waiters:
            self._wake()

    def closed(self, code: int, reason: str) -> None:
        self._ws.core.closed(code)  # now: a write failing after this does not change the code
        inbox = self._inbox
        if inbox is None:
            inbox = self._inbox = deque()
        self._closed = closed = _Closed(code, reason)
        inbox.append(closed)
        if self._task is None:
            self._task = self._sock.start(self._work(), self._vars)
        if self._waiters:
            self._wake()

    # the task that exists while there is work ---------------------------------------------

    async def _work(self) -> None:
        inbox = self._inbox
        assert inbox is not None
        ws = self._ws
        core = ws.core
        runner = self._runner
        while inbox:
            item = inbox.popleft()
            if type(item) is _Closed:
                inbox.clear()
                try:
                    await runner.finish(ws, self._resolver, core.close_code or item.code)
                finally:
                    self._run_after()
                return  # the end: this task stays the session's last
            if core.state is not _OPEN:
                continue  # closing: what the peer sent meanwhile is dropped
            try:
                await runner.handle(ws, core.receive(item), self._resolver, self._context, self._path_params)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001  # the boundary that runs user code; failed() logs it
                await runner.failed(ws, exc)
            if not self._reading and len(inbox) < HIGH_WATER // 2:
                self._reading = True
                self._sock.resume_reading()
        self._task = None  # nothing waits: the next message starts a task again
        self._inbox = None

    def _run_after(self) -> None:
        after, self._after = self._after, []
        self._ws.scope["extensions"][EXTENSION]["after"] = None  # later deferrals: at once
        for callback in after:
            try:
                callback()
            except Exception:
                logger.exception("a callback deferred until connection %s closed failed", self._ws.id)

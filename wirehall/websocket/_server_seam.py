"""What wirehall asks of the ASGI server beyond plain ASGI: two functions, each with a fallback.

- `start_send` (the eager write): run the server's `send(message)` coroutine up to its
  first suspension, here, in the caller's task, instead of awaiting it. With uvicorn that
  step writes the frame to the transport and finishes, unless the transport is paused
  because the peer is not reading; then the started coroutine is returned as an
  awaitable, and a writer task finishes it. That is what lets a broadcast reach 1,000
  idle members with no task and no await per member. It relies on nothing but the
  coroutine protocol (`send(None)`, `throw`), so under any server it is correct; a server
  whose `send` always suspends (one that needs its own task) only loses the shortcut:
  every write goes through the writer task, as plain ASGI would.
- `transport_aborter` (dropping a stuck peer): ASGI has no message for "reset this
  connection now", and returning from the app only makes the server close the transport
  gracefully, after its buffered bytes, which a peer that does not read never takes.
  uvicorn's `send` (all its WebSocket implementations) is a method of the connection's
  protocol, which holds the asyncio transport: that one is aborted with SO_LINGER 0.
  Other servers: None, and the caller falls back to plain ASGI (returning from the app).

Both are kept here so that when a server's behaviour changes, one module has to follow
(docs/websocket-outbox.md). The native server path (`wirehall.server.websocket`) uses
neither: it writes to its own transport.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Awaitable, Callable, Coroutine, Generator
from types import CoroutineType
from typing import Any

from wirehall.types import Message, Send

__all__ = ["SendInFlight", "start_send", "transport_aborter"]

_Step = Coroutine[Any, Any, Any] | Generator[Any, Any, Any]


class SendInFlight:
    """A server `send` that was stepped once and suspended: awaiting this finishes it.

    Its `__await__` does what `yield from` delegation does: it hands each future the
    coroutine yields up to the awaiting task, and passes back what the task sends or throws.
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


def start_send(send: Send, message: Message) -> SendInFlight | None:
    """Run `send(message)` up to its first suspension: None when it finished (written).

    Raises what the server's `send` raises (the socket is gone). A `SendInFlight` must be
    awaited (by a writer task) to finish the write.
    """
    awaitable = send(message)
    step = awaitable if type(awaitable) is CoroutineType else _stepper(awaitable)
    try:
        first = step.send(None)
    except StopIteration:
        return None
    return SendInFlight(step, first)


def transport_aborter(send: Send) -> Callable[[], None] | None:
    """How to reset the TCP connection behind the server's `send` at once; None if unreachable.

    None is the plain ASGI fallback: the caller returns from the app and the server
    closes the connection its own way.
    """
    transport: Any = getattr(getattr(send, "__self__", None), "transport", None)
    abort = getattr(transport, "abort", None)
    if transport is None or not callable(abort):
        return None

    def abort_now() -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        abort()

    return abort_now

"""The plain-logic core of one WebSocket connection: decisions, no awaits, no I/O.

In the style of the `websockets` library's sans-I/O protocol objects: a `ConnectionCore`
is told what happened (the handshake was accepted, a frame arrived, a write started or
finished, the clock moved) and answers what to do about it; whoever does the I/O
carries that out. Today that is the ASGI `WebSocketHandler` and its `Outbox`; a server
protocol that reads and writes frames itself can drive the same object.

It owns:

- the connection's state machine: CONNECTING -> OPEN -> CLOSING -> CLOSED (CONNECTING
  may go straight to CLOSED: a refused handshake, a client that left). Nothing moves a
  connection backwards, and once CLOSING nothing more is accepted from the peer;
- the verdict on each incoming message (`receive`): accept it (decoded when the route
  declares a message type), answer an invalid one, answer a rate-limited one with an
  error frame, or close with 1003 (wrong frame kind), 1009 (too large) or 1008 (kept
  sending over the rate limit, see `RateLimit`);
- the verdict on each outgoing one (`offer`): write it now, queue it behind a write in
  flight, drop it (`SlowConsumerPolicy`) or evict the connection (1013) because its
  queue, its byte budget or its drain deadline was exceeded. Time is passed in.

A little over 400 lines: one object owns all of a connection's decisions (that is the
point of it), and much of the length is docstrings; see docs/websocket-core.md.
"""

from __future__ import annotations

import enum
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from wirehall.websocket.codes import CloseCode
from wirehall.websocket.ratelimit import RateLimit, TokenBucket

__all__ = [
    "DEFAULT_DRAIN_TIMEOUT",
    "DEFAULT_MAX_PENDING_BYTES",
    "ConnectionCore",
    "FramePolicy",
    "Incoming",
    "Outgoing",
    "OutputLimits",
    "Phase",
    "SlowConsumerPolicy",
    "Verdict",
]

DEFAULT_MAX_PENDING_BYTES = 4 * 1024 * 1024
"""Four of the largest messages a route takes by default (1 MiB), or about a thousand
chat-sized frames: far more than a healthy client falls behind in a pause, little
enough that thousands of stalled peers cannot hold gigabytes."""
DEFAULT_DRAIN_TIMEOUT = 30.0
"""Seconds a connection's output may stay backed up without draining."""

_DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError)


class Phase(enum.Enum):
    """Where a connection is in its life (the core's state machine)."""

    CONNECTING = "connecting"
    OPEN = "open"
    CLOSING = "closing"
    """We started the close (its frame is on its way); nothing more is accepted."""
    CLOSED = "closed"


_CONNECTING, _OPEN, _CLOSING, _CLOSED = Phase.CONNECTING, Phase.OPEN, Phase.CLOSING, Phase.CLOSED


class SlowConsumerPolicy(enum.Enum):
    """What to do when a connection's outbound queue is full."""

    CLOSE = "close"
    """Close the connection with 1013 (try again later) and drop what it had queued."""
    DROP_OLDEST = "drop_oldest"
    """Drop the oldest queued broadcast to make room."""
    DROP_NEWEST = "drop_newest"
    """Drop the broadcast that did not fit."""


# incoming ------------------------------------------------------------------------------

_TEXT, _BYTES, _ANY = 0, 1, 2
_RECEIVES = {"text": _TEXT, "bytes": _BYTES, "any": _ANY}


@dataclass(frozen=True, slots=True)
class FramePolicy:
    """What a route accepts from its clients (built once per route from the controller's options)."""

    receives: Literal["text", "bytes", "any"] = "any"
    max_size: int | None = None
    """Bytes (UTF-8 for text); None: no limit."""
    rate_limit: RateLimit | None = None
    decode: Callable[[str | bytes], Any] | None = None
    """Turns a raw message into the route's message type; its `msgspec` errors make it invalid."""

    def __post_init__(self) -> None:
        if self.receives not in _RECEIVES:
            raise ValueError(f"receives = {self.receives!r}; use 'text', 'bytes' or 'any'")
        if self.max_size is not None and self.max_size < 1:
            raise ValueError(f"max_size = {self.max_size!r}; use a positive int (or None)")

    @property
    def rate_error(self) -> str:
        """The error frame's text for a message over the rate limit."""
        limit = self.rate_limit
        if limit is None:
            return ""
        return (
            f"rate limit exceeded: at most {limit.per_second:g} messages per second; this message was dropped"
        )


class Verdict(enum.Enum):
    """What to do with one incoming message."""

    ACCEPT = "accept"
    """Deliver `Incoming.value` to the controller."""
    INVALID = "invalid"
    """It did not decode into the message type: `Incoming.text` says why, `value` is the raw message."""
    REPLY = "reply"
    """Drop it and send an error frame with `Incoming.text` (over the rate limit)."""
    CLOSE = "close"
    """Close with `Incoming.code` and reason `Incoming.text` (the core is CLOSING already)."""
    IGNORE = "ignore"
    """The connection is no longer open: drop it."""


class Incoming:
    """The core's verdict on one incoming message; `size` is its length in bytes (UTF-8)."""

    __slots__ = ("code", "size", "text", "value", "verdict")

    def __init__(
        self, verdict: Verdict, value: Any = None, size: int = 0, text: str = "", code: int = 0
    ) -> None:
        self.verdict = verdict
        self.value = value
        self.size = size
        self.text = text
        self.code = code

    def __repr__(self) -> str:
        return f"Incoming({self.verdict.value}, size={self.size}, text={self.text!r}, code={self.code})"


_IGNORED = Incoming(Verdict.IGNORE)
_ACCEPT, _INVALID, _REPLY = Verdict.ACCEPT, Verdict.INVALID, Verdict.REPLY


# outgoing ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutputLimits:
    """When a connection becomes a slow consumer (see `WebSocketService`)."""

    max_queue: int = 1024
    policy: SlowConsumerPolicy = SlowConsumerPolicy.CLOSE
    max_pending_bytes: int | None = DEFAULT_MAX_PENDING_BYTES
    drain_timeout: float | None = DEFAULT_DRAIN_TIMEOUT


class Outgoing(enum.Enum):
    """What to do with one outgoing message."""

    WRITE = "write"
    """No write is in flight: write it now."""
    QUEUE = "queue"
    """A write is in flight (or the handshake is not done): queue it behind what waits."""
    DROP = "drop"
    """Drop it: the output is closed to broadcasts, or the queue is full under DROP_NEWEST
    (an awaited message is never dropped, except when the output is dead)."""
    DROP_OLDEST = "drop_oldest"
    """The queue is full: drop its oldest broadcast (`dequeued`), then offer this one again."""
    EVICT_FULL = "evict_full"
    """More than `max_queue` messages wait (policy CLOSE): close it with 1013."""
    EVICT_STALLED = "evict_stalled"
    """Over the byte budget or past the drain deadline: close it with 1013; `eviction` says why."""


class ConnectionCore:
    """The state machine and the decisions of one WebSocket connection (see the module)."""

    __slots__ = (
        "_bucket",
        "_clock",
        "_decode",
        "_kind",
        "_limits",
        "_max_size",
        "_plain",
        "_policy",
        "_text_limit",
        "accepted",
        "broadcasts",
        "close_code",
        "dead",
        "drain_by",
        "eviction",
        "idle",
        "on_busy",
        "pending_bytes",
        "queued",
        "state",
        "writing",
    )

    def __init__(
        self,
        policy: FramePolicy | None = None,
        limits: OutputLimits | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.state = _CONNECTING
        self.close_code: int | None = None
        self.accepted = False
        """Whether the handshake was accepted (it stays True once closed)."""
        self._clock = clock
        self._bucket: TokenBucket | None = None
        self._kind = _ANY
        self._max_size = self._text_limit = sys.maxsize
        self._decode: Callable[[str | bytes], Any] | None = None
        self._policy = FramePolicy()
        self._plain = Incoming(_ACCEPT)
        if policy is not None:
            self.set_policy(policy)
        self._limits = limits or OutputLimits()
        # output: `idle` is the hot path's one check (no write in flight, taking broadcasts,
        # alive); the rest says when a connection is a slow consumer
        self.idle = False
        # called each time `idle` turns False (the native outbox stops writing past it)
        self.on_busy: Callable[[], None] | None = None
        self.writing = True  # a write is in flight; also until the handshake: messages wait for it
        self.broadcasts = True  # False once closing: no more broadcasts are taken
        self.dead = False  # nothing more is written (evicted, aborted, the socket failed)
        self.queued = 0
        self.pending_bytes = 0
        self.drain_by: float | None = None
        self.eviction = ""

    # the state machine -------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """Whether the connection was accepted and nobody started closing it."""
        return self.state is _OPEN

    def accept(self) -> bool:
        """The handshake was accepted: OPEN (False when it was closed meanwhile)."""
        self.accepted = True  # the accept went out, even if a close came first
        if self.state is not _CONNECTING:
            return False
        self.state = _OPEN
        if not self.dead:
            self.writing = False
            self.idle = self.broadcasts
        return True

    def start_close(self, code: int) -> bool:
        """We close with `code`: CLOSING when open, CLOSED before the handshake.

        Returns False when the connection was closing or closed already (nothing to send).
        """
        state = self.state
        if state is _CLOSING or state is _CLOSED:
            return False
        self.state = _CLOSING if state is _OPEN else _CLOSED
        if self.close_code is None:
            self.close_code = code
        return True

    def closed(self, code: int) -> None:
        """The connection is gone: the peer closed (or left), our close was sent, or the socket died.

        The first close code stays (ours, when we started the close). No broadcast is
        written from here on (awaited writes are answered by the server's refusal).
        """
        self.state = _CLOSED
        self.broadcasts = False
        self._busy()
        if self.close_code is None:
            self.close_code = code

    def set_policy(self, policy: FramePolicy) -> None:
        """Use `policy` for incoming messages (the route's; set before the first one)."""
        self._policy = policy
        limit = policy.rate_limit
        self._bucket = limit.bucket(self._clock) if limit is not None else None
        # the policy's fields, ready for the per-message path
        self._kind = _RECEIVES[policy.receives]
        self._max_size = policy.max_size if policy.max_size is not None else sys.maxsize
        self._text_limit = self._max_size // 4
        self._decode = policy.decode

    # incoming ------------------------------------------------------------------------------

    def receive(self, message: str | bytes) -> Incoming:
        """The verdict on one message from the peer (`str`: a text frame, `bytes`: binary).

        A plain accept (no decoding, no rate limit refusal) is the same `Incoming` each
        time, updated in place: read it before the next `receive`.
        """
        if self.state is not _OPEN:
            return _IGNORED  # closed while this message was on its way
        if type(message) is str:
            if self._kind == _BYTES:
                return self._fail(CloseCode.UNSUPPORTED_DATA, "text frames are not accepted here")
            size = len(message)
            # a text of at most max_size // 4 characters cannot exceed max_size in UTF-8
            if size > self._text_limit and not message.isascii():
                size = len(message.encode())
        else:
            if self._kind == _TEXT:
                return self._fail(CloseCode.UNSUPPORTED_DATA, "binary frames are not accepted here")
            size = len(message)
        if size > self._max_size:
            return self._fail(
                CloseCode.MESSAGE_TOO_BIG, f"message of {size} bytes; the limit is {self._max_size}"
            )
        bucket = self._bucket
        if bucket is not None and not bucket.take():
            if bucket.exhausted:
                return self._fail(CloseCode.POLICY_VIOLATION, "rate limit exceeded")
            return Incoming(_REPLY, message, size, self._policy.rate_error)
        decode = self._decode
        if decode is None:
            # the commonest verdict, on the per-message path: one Incoming per core, reused
            plain = self._plain
            plain.value = message
            plain.size = size
            return plain
        try:
            return Incoming(_ACCEPT, decode(message), size)
        except _DECODE_ERRORS as exc:
            return Incoming(_INVALID, message, size, str(exc))
        except RecursionError:
            return Incoming(_INVALID, message, size, "the message is nested too deeply")

    def _fail(self, code: int, reason: str) -> Incoming:
        self.start_close(code)
        return Incoming(Verdict.CLOSE, None, 0, reason, code)

    # outgoing ------------------------------------------------------------------------------

    @property
    def limits(self) -> OutputLimits:
        """When this connection becomes a slow consumer."""
        return self._limits

    def set_limits(self, limits: OutputLimits) -> None:
        """Use `limits` for outgoing messages (the service's, on register)."""
        self._limits = limits

    def offer(self, size: int, now: float, *, awaited: bool = False) -> Outgoing:
        """The verdict on one outgoing message of `size` bytes (text: characters) at time `now`.

        `awaited`: its sender waits until it is written (a controller's `send_text`, the
        close frame), so it is never dropped for policy and does not count against
        `max_queue`. QUEUE counts it as waiting (`dequeued` when it leaves the queue) and
        arms the drain deadline when a write is in flight after the handshake.
        """
        if self.idle:
            return Outgoing.WRITE
        if self.dead:
            return Outgoing.DROP
        if not awaited and not self.broadcasts:
            return Outgoing.DROP
        if not self.writing:
            return Outgoing.WRITE
        limits = self._limits
        if not awaited and self.queued >= limits.max_queue:
            policy = limits.policy
            if policy is SlowConsumerPolicy.DROP_NEWEST:
                return Outgoing.DROP
            if policy is SlowConsumerPolicy.DROP_OLDEST:
                return Outgoing.DROP_OLDEST
            self.eviction = f"{self.queued} messages queued, the limit"
            return Outgoing.EVICT_FULL
        budget = limits.max_pending_bytes
        # one message larger than the budget may wait alone
        if budget is not None and self.queued and self.pending_bytes + size > budget:
            self.eviction = f"more than {budget} bytes waited to be written"
            return Outgoing.EVICT_STALLED
        if self.accepted and limits.drain_timeout is not None:  # a write is in flight: backed up
            drain_by = self.drain_by
            if drain_by is None:
                self.drain_by = now + limits.drain_timeout
            elif now >= drain_by:
                self.eviction = self.drain_reason()
                return Outgoing.EVICT_STALLED
        self.queued += 1
        self.pending_bytes += size
        return Outgoing.QUEUE

    def dequeued(self, size: int) -> None:
        """A queued message left the queue (to be written, or dropped)."""
        self.queued -= 1
        self.pending_bytes -= size

    def write_started(self, now: float | None = None) -> None:
        """A write is in flight: what follows queues behind it.

        With `now` (the write did not finish at once: the socket is backed up) the drain
        deadline starts, unless it runs already.
        """
        self.writing = True
        self._busy()
        drain_timeout = self._limits.drain_timeout
        if now is not None and self.drain_by is None and drain_timeout is not None and self.accepted:
            self.drain_by = now + drain_timeout

    def write_finished(self) -> None:
        """The write in flight ended; what is queued is written next (the deadline still runs)."""
        if not self.dead:
            self.writing = False

    def drained(self) -> None:
        """The write in flight ended and nothing waits: the drain deadline is off."""
        if self.dead:
            return
        self.writing = False
        self.drain_by = None
        self.idle = self.broadcasts

    def deadline_left(self, now: float) -> float | None:
        """Seconds until the drain deadline (<= 0: evict now); None when none runs."""
        drain_by = self.drain_by
        if drain_by is None or self.dead:
            return None
        return drain_by - now

    def drain_reason(self) -> str:
        """Why a connection whose drain deadline passed is evicted."""
        return f"its output did not drain for {self._limits.drain_timeout:g}s"

    def stop_broadcasts(self) -> None:
        """The close started: no more broadcasts; what is queued and awaited writes still go."""
        self.broadcasts = False
        self._busy()

    def abandon(self) -> None:
        """The output is dead (evicted, aborted, or the socket failed): nothing more is written."""
        self.broadcasts = False
        self.writing = True
        self.dead = True
        self._busy()
        self.queued = 0
        self.pending_bytes = 0
        self.drain_by = None

    def _busy(self) -> None:
        self.idle = False
        on_busy = self.on_busy
        if on_busy is not None:
            on_busy()

    def __repr__(self) -> str:
        return (
            f"<ConnectionCore {self.state.value} queued={self.queued} "
            f"bytes={self.pending_bytes} writing={self.writing}>"
        )

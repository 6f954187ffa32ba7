"""Background tasks that must not die unnoticed, and the backoff between retries.

`Supervisor` runs the background tasks of one owner (the Redis backplane, the WebSocket
service): one-shot tasks whose failure is logged, and loops that must run as long as their
owner does and are restarted, after a `Backoff` delay, when they stop. `Backoff` is the one
retry policy: a delay that doubles from a first value up to a ceiling.

This module imports nothing of wirehall, so every layer may use it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

__all__ = ["Backoff", "Supervisor"]


class Backoff:
    """Delays between retries: `first`, then `factor` times the last, never above `maximum`.

    `next()` gives the delay to wait before the next attempt; `reset()` starts over (after
    a success that lasted). Plain arithmetic: the caller does the waiting.
    """

    def __init__(self, first: float, maximum: float, *, factor: float = 2.0) -> None:
        if not 0 <= first <= maximum:
            raise ValueError(
                f"a backoff needs 0 <= first <= maximum, got first={first!r}, maximum={maximum!r}"
            )
        if factor < 1:
            raise ValueError(f"a backoff's factor must be at least 1, got {factor!r}")
        self.first = first
        self.maximum = maximum
        self.factor = factor
        self._next = first
        self.failures = 0

    def next(self) -> float:
        """The delay to wait now; the one after it grows by `factor` (up to `maximum`)."""
        delay = self._next
        self._next = min(max(delay * self.factor, self.first), self.maximum)
        self.failures += 1
        return delay

    def reset(self) -> None:
        """Start again from `first` (the thing retried has worked for a while)."""
        self._next = self.first
        self.failures = 0

    def __repr__(self) -> str:
        return f"<Backoff next={self._next:g}s first={self.first:g}s maximum={self.maximum:g}s>"


LoopFactory = Callable[[], Coroutine[Any, Any, None]]


class Supervisor:
    """The background tasks of one owner, none of which may fail silently.

    Args:
        owner: how log messages name the owner, e.g. "the Redis backplane".
        logger: where failures and restarts are logged (the owner's logger).
        is_running: whether the owner still runs; a loop that stops while it does not
            is not restarted.
        task_prefix: prefix of the asyncio task names ("wirehall-redis" gives
            "wirehall-redis-subscriber").
        backoff: a new `Backoff` for each supervised loop: the delays between restarts.
            A loop that ran for at least the backoff's `maximum` is restarted after the
            first delay again.
        sleep: how to wait (injected by tests).
        clock: seconds, for how long a loop ran (injected by tests).
    """

    def __init__(
        self,
        owner: str,
        *,
        logger: logging.Logger,
        is_running: Callable[[], bool],
        task_prefix: str = "wirehall",
        backoff: Callable[[], Backoff] = lambda: Backoff(0.05, 2.0),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.owner = owner
        self._logger = logger
        self._is_running = is_running
        self._prefix = task_prefix
        self._backoff = backoff
        self._sleep = sleep
        self._clock = clock
        self._spawned: set[asyncio.Task[None]] = set()
        self._loops: set[asyncio.Task[None]] = set()

    @property
    def pending(self) -> int:
        """How many tasks (one-shot and loops) have not finished yet."""
        return len(self._spawned) + len(self._loops)

    def spawn(self, coroutine: Coroutine[Any, Any, None], name: str = "task") -> asyncio.Task[None]:
        """Run `coroutine` in a task; an exception it ends with is logged as an ERROR."""
        task = asyncio.get_running_loop().create_task(coroutine, name=f"{self._prefix}-{name}")
        self._spawned.add(task)
        task.add_done_callback(self._spawned_done)
        return task

    def _spawned_done(self, task: asyncio.Task[None]) -> None:
        self._spawned.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            self._logger.error("background task %s of %s failed", task.get_name(), self.owner, exc_info=error)

    def supervise(
        self, name: str, first: LoopFactory, again: LoopFactory | None = None
    ) -> asyncio.Task[None]:
        """Run the loop `first()` for as long as the owner runs.

        When it returns or raises while the owner is running, the stop is logged as an
        ERROR and `again()` (or `first()` when not given) is started after a backoff delay.
        """
        task = asyncio.get_running_loop().create_task(
            self._keep_running(name, first, again or first), name=f"{self._prefix}-{name}"
        )
        self._loops.add(task)
        task.add_done_callback(self._loops.discard)
        return task

    async def _keep_running(self, name: str, first: LoopFactory, again: LoopFactory) -> None:
        backoff = self._backoff()
        factory = first
        while True:
            started = self._clock()
            error: Exception | None = None
            try:
                await factory()
            except Exception as exc:  # noqa: BLE001  # logged below, and the loop restarted
                error = exc
            if not self._is_running():
                return
            if self._clock() - started >= backoff.maximum:
                backoff.reset()  # it had worked for a while: this is a new failure
            delay = backoff.next()
            self._logger.error(
                "%s's %s loop stopped%s; restarting it in %.2f s",
                self.owner,
                name,
                "" if error is not None else " without an error",
                delay,
                exc_info=error,
            )
            await self._sleep(delay)
            if not self._is_running():
                return
            factory = again

    async def settle(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for the one-shot tasks to finish (loops keep running)."""
        if self._spawned:
            await asyncio.wait(set(self._spawned), timeout=timeout)

    async def cancel_loops(self) -> None:
        """Cancel the supervised loops and wait until they have ended."""
        await _cancel(self._loops)

    async def cancel(self) -> None:
        """Cancel every task, one-shot or loop, and wait until they have ended."""
        await _cancel(self._loops | self._spawned)


async def _cancel(tasks: set[asyncio.Task[None]]) -> None:
    tasks = set(tasks)
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks)

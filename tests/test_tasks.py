"""Tests for wirehall/_tasks.py: the backoff policy and the task supervisor.

The supervisor's waits go through an injected `sleep` that records the delay and returns
at once, and its clock is a number the test moves, so nothing here sleeps.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from wirehall._tasks import Backoff, Supervisor


def test_backoff_doubles_from_first_up_to_maximum() -> None:
    backoff = Backoff(0.1, 1.0)
    assert [backoff.next() for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert backoff.failures == 6


def test_backoff_reset_starts_again_from_first() -> None:
    backoff = Backoff(0.05, 2.0, factor=4)
    assert [backoff.next() for _ in range(4)] == [0.05, 0.2, 0.8, 2.0]
    backoff.reset()
    assert backoff.failures == 0
    assert backoff.next() == 0.05


@pytest.mark.parametrize(("first", "maximum", "factor"), [(-1, 1, 2), (2, 1, 2), (0.1, 1, 0.5)])
def test_backoff_refuses_delays_that_do_not_grow_within_bounds(
    first: float, maximum: float, factor: float
) -> None:
    with pytest.raises(ValueError, match="backoff"):
        Backoff(first, maximum, factor=factor)


class Harness:
    """A supervisor with a fake clock and a sleep that records its delays and yields once."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self.running = True
        self.now = 0.0
        self.delays: list[float] = []
        self.caplog = caplog
        self.supervisor = Supervisor(
            "the test owner",
            logger=logging.getLogger("tests.tasks"),
            is_running=lambda: self.running,
            task_prefix="wirehall-test",
            backoff=lambda: Backoff(0.1, 1.0),
            sleep=self.sleep,
            clock=lambda: self.now,
        )

    async def sleep(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)

    @property
    def messages(self) -> list[str]:
        return [record.getMessage() for record in self.caplog.records if record.name == "tests.tasks"]


@pytest.fixture
def harness(caplog: pytest.LogCaptureFixture) -> Harness:
    caplog.set_level(logging.DEBUG, logger="tests.tasks")
    return Harness(caplog)


async def test_a_loop_that_fails_is_restarted_with_growing_delays(harness: Harness) -> None:
    runs: list[str] = []
    done = asyncio.Event()

    async def first() -> None:
        runs.append("first")
        raise RuntimeError("a bug")

    async def again() -> None:
        runs.append("again")
        if len(runs) == 4:
            done.set()
            await asyncio.Event().wait()  # now it keeps running
        raise RuntimeError("the same bug")

    task = harness.supervisor.supervise("reader", first, again)
    assert task.get_name() == "wirehall-test-reader"
    await asyncio.wait_for(done.wait(), 2)
    assert runs == ["first", "again", "again", "again"]
    assert harness.delays == [0.1, 0.2, 0.4]
    assert harness.messages[0] == "the test owner's reader loop stopped; restarting it in 0.10 s"
    records = [record for record in harness.caplog.records if record.name == "tests.tasks"]
    assert all(record.levelno == logging.ERROR and record.exc_info for record in records)
    await harness.supervisor.cancel()
    assert task.cancelled()
    assert harness.supervisor.pending == 0


async def test_a_loop_that_ran_long_enough_restarts_after_the_first_delay_again(harness: Harness) -> None:
    runs = 0
    done = asyncio.Event()

    async def loop() -> None:
        nonlocal runs
        runs += 1
        if runs == 3:
            harness.now += 5.0  # this run lasts longer than the backoff's maximum
        if runs == 5:
            done.set()
            await asyncio.Event().wait()

    harness.supervisor.supervise("pump", loop)
    await asyncio.wait_for(done.wait(), 2)
    assert harness.delays == [0.1, 0.2, 0.1, 0.2]
    assert "the test owner's pump loop stopped without an error; restarting it in 0.10 s" in harness.messages
    await harness.supervisor.cancel_loops()


async def test_a_loop_that_stops_once_its_owner_stopped_is_not_restarted(harness: Harness) -> None:
    runs = 0

    async def loop() -> None:
        nonlocal runs
        runs += 1
        harness.running = False

    task = harness.supervisor.supervise("pump", loop)
    await asyncio.wait_for(task, 2)
    assert (runs, harness.delays, harness.messages) == (1, [], [])


async def test_a_spawned_task_that_fails_is_logged_with_its_name(harness: Harness) -> None:
    async def fail() -> None:
        raise RuntimeError("boom")

    task = harness.supervisor.spawn(fail(), "restore")
    await asyncio.wait({task})
    assert harness.messages == ["background task wirehall-test-restore of the test owner failed"]
    assert harness.supervisor.pending == 0


async def test_settle_waits_for_spawned_tasks_but_no_longer_than_the_timeout(harness: Harness) -> None:
    release = asyncio.Event()
    finished: list[str] = []

    async def quick() -> None:
        finished.append("quick")

    async def stuck() -> None:
        await release.wait()

    harness.supervisor.spawn(quick())
    await harness.supervisor.settle(1.0)
    assert finished == ["quick"]
    stuck_task = harness.supervisor.spawn(stuck())
    await harness.supervisor.settle(0.01)
    assert not stuck_task.done()
    await harness.supervisor.cancel()
    assert stuck_task.cancelled()

"""The token bucket behind `WebSocketController.rate_limit`."""

from __future__ import annotations

import pytest

from wirehall.websocket.ratelimit import RateLimit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_burst_is_allowed_then_the_rate_refills_it() -> None:
    clock = Clock()
    bucket = RateLimit(per_second=2, burst=3).bucket(clock)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    clock.now += 0.5  # one token back
    assert bucket.take() is True
    assert bucket.take() is False
    clock.now += 100  # refills up to the burst only
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]


def test_consecutive_violations_count_and_reset_on_success() -> None:
    clock = Clock()
    bucket = RateLimit(per_second=1, burst=1, max_violations=2).bucket(clock)
    assert bucket.take()
    assert not bucket.take()
    assert not bucket.take()
    assert bucket.violations == 2
    assert not bucket.exhausted
    assert not bucket.take()
    assert bucket.exhausted
    clock.now += 1
    assert bucket.take()
    assert bucket.violations == 0
    assert not bucket.exhausted


def test_a_client_just_over_the_rate_is_not_forgiven_by_the_messages_let_through() -> None:
    clock = Clock()
    bucket = RateLimit(per_second=10, burst=3, max_violations=4, forgive_after=1.0).bucket(clock)
    results = []
    for _ in range(60):  # 20 messages a second against a limit of 10: every other one refused
        results.append(bucket.take())
        clock.now += 0.05
        if bucket.exhausted:
            break
    assert True in results[3:]  # some got through in between...
    assert bucket.exhausted  # ...yet the refusals added up
    assert len(results) < 20


def test_slowing_down_for_forgive_after_clears_the_count() -> None:
    clock = Clock()
    bucket = RateLimit(per_second=1, burst=1, max_violations=5, forgive_after=2.0).bucket(clock)
    assert bucket.take()
    assert not bucket.take()
    clock.now += 1.0  # a token back, but only a second after the refusal
    assert bucket.take()
    assert bucket.violations == 1
    clock.now += 2.0
    assert bucket.take()
    assert bucket.violations == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"per_second": 0}, "per_second"),
        ({"per_second": 1, "burst": 0}, "burst"),
        ({"per_second": 1, "max_violations": -1}, "max_violations"),
        ({"per_second": 1, "forgive_after": -1}, "forgive_after"),
    ],
)
def test_bad_limits_are_refused(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RateLimit(**kwargs)  # type: ignore[arg-type]

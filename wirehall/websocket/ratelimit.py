"""A token bucket limiting how fast one connection may send messages."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RateLimit", "TokenBucket"]


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most `per_second` messages a second on average, `burst` at once.

    A message over the limit is refused (dropped, with an error frame). Refused
    messages are counted until the connection goes `forgive_after` seconds without one;
    when the count passes `max_violations` the connection is closed (1008, policy
    violation). So a client that keeps sending over the limit is closed, whether it
    floods (more than `max_violations` refusals in a row) or stays just above the rate
    (some messages allowed in between do not clear the count); a client that slows down
    for `forgive_after` seconds starts afresh.
    """

    per_second: float
    burst: int = 10
    max_violations: int = 10
    forgive_after: float = 1.0

    def __post_init__(self) -> None:
        if self.per_second <= 0:
            raise ValueError(f"RateLimit.per_second must be positive, got {self.per_second!r}")
        if self.burst < 1:
            raise ValueError(f"RateLimit.burst must be at least 1, got {self.burst!r}")
        if self.max_violations < 0:
            raise ValueError(f"RateLimit.max_violations must be >= 0, got {self.max_violations!r}")
        if self.forgive_after < 0:
            raise ValueError(f"RateLimit.forgive_after must be >= 0 seconds, got {self.forgive_after!r}")

    def bucket(self, clock: Callable[[], float] = time.monotonic) -> TokenBucket:
        """A fresh, full bucket for one connection."""
        return TokenBucket(self, clock)


class TokenBucket:
    """The tokens one connection has left; `take()` spends one if it can."""

    __slots__ = ("_clock", "_last_refused", "_rate", "_updated", "tokens", "violations")

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = limit
        self._clock = clock
        self.tokens = float(limit.burst)
        self._updated = clock()
        self._last_refused = float("-inf")
        self.violations = 0

    def take(self) -> bool:
        """Spend a token: True when allowed; False (and one more violation) when over the rate.

        An allowed message clears the violations only `forgive_after` seconds after the
        last refused one.
        """
        now = self._clock()
        limit = self._rate
        tokens = self.tokens + (now - self._updated) * limit.per_second
        self._updated = now
        if tokens > limit.burst:
            tokens = float(limit.burst)
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            if self.violations and now - self._last_refused >= limit.forgive_after:
                self.violations = 0
            return True
        self.tokens = tokens
        self.violations += 1
        self._last_refused = now
        return False

    @property
    def exhausted(self) -> bool:
        """Whether the counted violations went past the limit's `max_violations`."""
        return self.violations > self._rate.max_violations

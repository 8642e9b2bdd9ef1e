"""Client-side rate limiting per Box connection.

Box limits each user to roughly 1000 API calls and 240 uploads per minute, and every
workstation and worker thread that uses one Custom App shares that budget.  Staying
under it on our side costs a short wait; going over it costs a 429 and a
Retry-After that can stall every transfer.  After a 429 anyway, the whole connection
pauses for the Retry-After period, so the other workers do not keep hammering a
user that Box has already throttled.

The decision (`TokenBucket.try_take`) is pure arithmetic over an injected clock, so
the tests check it without sleeping; `acquire` adds the waiting.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

Clock = Callable[[], float]
Sleep = Callable[[float], None]

# A bogus or huge Retry-After must not freeze a connection for hours; the job-level
# retry takes over after this.
MAX_PAUSE_SECONDS = 600.0
# Float refills can leave 0.9999999 tokens; counting that as a whole token avoids
# waits too small to move a clock.
_EPSILON = 1e-9


class TokenBucket:
    """Thread-safe token bucket: `per_minute` tokens a minute, bursts up to `capacity`.

    The default capacity is a tenth of the minute's budget: enough that a handful of
    workers start at once without waiting, small enough that a burst plus the steady
    rate stays under Box's per-minute limit.
    """

    def __init__(self, per_minute: float, *, capacity: float | None = None,
                 clock: Clock = time.monotonic):
        if per_minute <= 0:
            raise ValueError(f"per_minute must be positive, got {per_minute!r}")
        self.rate = per_minute / 60.0  # tokens per second
        self.capacity = float(capacity if capacity is not None else max(1.0, per_minute / 10.0))
        if self.capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity!r}")
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens = self.capacity
        self._stamp = clock()
        self._paused_until = float("-inf")

    def _refill(self, now: float) -> None:
        if now > self._stamp:
            self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now

    def try_take(self, now: float | None = None) -> float:
        """Take one token if one is available now: return 0.0.  Otherwise take nothing
        and return how many seconds to wait before trying again."""
        with self._lock:
            if now is None:
                now = self._clock()
            if now < self._paused_until:
                return self._paused_until - now
            self._refill(now)
            if self._tokens >= 1.0 - _EPSILON:
                self._tokens = max(0.0, self._tokens - 1.0)
                return 0.0
            return max((1.0 - self._tokens) / self.rate, 1e-6)

    def pause(self, seconds: float, now: float | None = None) -> None:
        """Hand out nothing for `seconds` (Box said Retry-After), then restart with an
        empty bucket so the restart is gentle rather than a full burst."""
        seconds = min(max(0.0, float(seconds)), MAX_PAUSE_SECONDS)
        with self._lock:
            if now is None:
                now = self._clock()
            until = now + seconds
            if until > self._paused_until:
                self._paused_until = until
                self._tokens = 0.0
                self._stamp = max(self._stamp, until)

    def paused_for(self, now: float | None = None) -> float:
        with self._lock:
            if now is None:
                now = self._clock()
            return max(0.0, self._paused_until - now)

    def acquire(self, sleep: Sleep = time.sleep) -> float:
        """Block until a token is taken; return the seconds spent waiting."""
        waited = 0.0
        while True:
            wait = self.try_take()
            if wait <= 0.0:
                return waited
            sleep(wait)
            waited += wait


class RateLimiter:
    """The two budgets of one Box connection (one Box user)."""

    def __init__(self, api_calls_per_minute: float, uploads_per_minute: float, *,
                 clock: Clock = time.monotonic, sleep: Sleep = time.sleep):
        self.api = TokenBucket(api_calls_per_minute, clock=clock)
        self.uploads = TokenBucket(uploads_per_minute, clock=clock)
        self._sleep = sleep
        self._lock = threading.Lock()
        self._waited = 0.0

    @classmethod
    def for_connection(cls, conn, **kw) -> "RateLimiter":
        return cls(conn.api_calls_per_minute, conn.uploads_per_minute, **kw)

    def _note(self, waited: float) -> float:
        if waited:
            with self._lock:
                self._waited += waited
        return waited

    def acquire_call(self) -> float:
        """Before every HTTP request to the Box API."""
        return self._note(self.api.acquire(self._sleep))

    def acquire_upload(self) -> float:
        """Before every request that starts a file upload (direct or a session)."""
        return self._note(self.uploads.acquire(self._sleep))

    def pause(self, seconds: float) -> None:
        """A 429 arrived: stop the whole connection for Retry-After seconds."""
        self.api.pause(seconds)
        self.uploads.pause(seconds)

    def paused_for(self) -> float:
        return max(self.api.paused_for(), self.uploads.paused_for())

    def total_waited(self) -> float:
        """Seconds all threads together spent waiting here (for status and benchmarks)."""
        with self._lock:
            return self._waited

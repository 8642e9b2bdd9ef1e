import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cfbox_watch.config_model import Connection
from cfbox_watch.ratelimit import MAX_PAUSE_SECONDS, RateLimiter, TokenBucket


class FakeClock:
    """A clock that only moves when the code under test sleeps (thread-safe)."""

    def __init__(self, start: float = 1000.0):
        self.now = start
        self.lock = threading.Lock()

    def __call__(self) -> float:
        with self.lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds


def test_burst_then_steady_rate():
    clock = FakeClock()
    bucket = TokenBucket(60, capacity=3, clock=clock)   # 1 token per second
    assert [bucket.try_take() for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = bucket.try_take()
    assert wait == pytest.approx(1.0)
    clock.sleep(0.5)
    assert bucket.try_take() == pytest.approx(0.5)
    clock.sleep(0.5)
    assert bucket.try_take() == 0.0


def test_refill_is_capped_at_capacity():
    clock = FakeClock()
    bucket = TokenBucket(60, capacity=2, clock=clock)
    clock.sleep(3600)
    assert bucket.try_take() == 0.0
    assert bucket.try_take() == 0.0
    assert bucket.try_take() > 0.0


def test_default_capacity_is_a_tenth_of_a_minute():
    bucket = TokenBucket(900, clock=FakeClock())
    assert bucket.capacity == 90
    assert TokenBucket(5, clock=FakeClock()).capacity == 1


@pytest.mark.parametrize("bad", [0, -1])
def test_rejects_non_positive_rate(bad):
    with pytest.raises(ValueError):
        TokenBucket(bad)


def test_acquire_sleeps_for_the_deficit_only():
    clock = FakeClock()
    bucket = TokenBucket(120, capacity=1, clock=clock)  # 2 per second
    assert bucket.acquire(clock.sleep) == 0.0
    waited = bucket.acquire(clock.sleep)
    assert waited == pytest.approx(0.5)


def test_calls_over_a_simulated_minute_stay_under_budget():
    clock = FakeClock()
    per_minute = 900
    bucket = TokenBucket(per_minute, clock=clock)
    start = clock()
    taken = 0
    while clock() - start < 60.0:
        bucket.acquire(clock.sleep)
        if clock() - start < 60.0:
            taken += 1
    # a tenth-of-a-minute burst plus the steady rate
    assert per_minute <= taken <= per_minute + bucket.capacity + 1


def test_pause_blocks_until_retry_after_then_restarts_empty():
    clock = FakeClock()
    bucket = TokenBucket(60, capacity=5, clock=clock)
    bucket.pause(30)
    assert bucket.paused_for() == pytest.approx(30)
    assert bucket.try_take() == pytest.approx(30)
    clock.sleep(30)
    # empty bucket after the pause: a gentle restart, not a burst of 5
    assert bucket.try_take() == pytest.approx(1.0)
    clock.sleep(1.0)
    assert bucket.try_take() == 0.0


def test_shorter_pause_does_not_shorten_a_longer_one():
    clock = FakeClock()
    bucket = TokenBucket(60, clock=clock)
    bucket.pause(20)
    bucket.pause(5)
    assert bucket.paused_for() == pytest.approx(20)


def test_pause_is_capped():
    clock = FakeClock()
    bucket = TokenBucket(60, clock=clock)
    bucket.pause(10**9)
    assert bucket.paused_for() == pytest.approx(MAX_PAUSE_SECONDS)
    bucket2 = TokenBucket(60, clock=clock)
    bucket2.pause(-5)
    assert bucket2.paused_for() == 0.0


def test_limiter_pause_stops_both_budgets_and_counts_waiting():
    clock = FakeClock()
    limiter = RateLimiter(600, 60, clock=clock, sleep=clock.sleep)
    assert limiter.acquire_call() == 0.0
    limiter.pause(12)
    assert limiter.paused_for() == pytest.approx(12)
    t0 = clock()
    limiter.acquire_upload()
    assert clock() - t0 >= 12
    assert limiter.total_waited() >= 12


def test_limiter_from_connection():
    conn = Connection(name="acme", jwt_config="/x", api_calls_per_minute=120, uploads_per_minute=30)
    limiter = RateLimiter.for_connection(conn, clock=FakeClock())
    assert limiter.api.rate == pytest.approx(2.0)
    assert limiter.uploads.rate == pytest.approx(0.5)


def test_threads_never_exceed_the_budget():
    """Many threads drawing on one bucket: the tokens handed out in a window are
    bounded by capacity + rate * window, whatever the interleaving."""
    clock = FakeClock()
    bucket = TokenBucket(600, capacity=4, clock=clock)  # 10/s
    grants: list[float] = []
    lock = threading.Lock()

    def worker():
        for _ in range(25):
            bucket.acquire(clock.sleep)
            with lock:
                grants.append(clock())

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(grants) == 200
    # tokens only accrue as the clock moves: by any grant time t, at most
    # capacity + rate * (t - start) tokens can have been handed out in total
    for i, t in enumerate(sorted(grants), start=1):
        assert i <= 4 + 10.0 * (t - 1000.0) + 1e-6


@settings(max_examples=200, deadline=None)
@given(
    per_minute=st.integers(min_value=1, max_value=5000),
    steps=st.lists(st.floats(min_value=0, max_value=5, allow_nan=False), min_size=1, max_size=200),
)
def test_grants_within_any_run_respect_the_rate(per_minute, steps):
    clock = FakeClock()
    bucket = TokenBucket(per_minute, clock=clock)
    start = clock()
    granted = 0
    for step in steps:
        clock.sleep(step)
        if bucket.try_take() == 0.0:
            granted += 1
    elapsed = clock() - start
    assert granted <= bucket.capacity + elapsed * per_minute / 60.0 + 1e-6

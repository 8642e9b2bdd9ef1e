"""Fault injection and Box-like per-user rate limits, as plain decisions.

`Faults.decide(path)` returns what to do to one request; the server applies it.
Kept apart from the HTTP code so the probabilities and windows are easy to reason about."""

from __future__ import annotations

import random
import re
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass


@dataclass
class FaultPlan:
    error_500: float = 0.0
    error_503: float = 0.0
    rate_429: float = 0.0
    retry_after: int = 1
    reset: float = 0.0
    reset_after: float = 0.0
    latency: float = 0.0
    bandwidth: float | None = None
    corrupt_download: float = 0.0
    path_regex: str | None = None


@dataclass
class Decision:
    status: int | None = None        # answer this error instead of handling
    reset: bool = False              # cut the connection mid-body
    reset_after: bool = False        # handle the request, then cut the answer mid-body
    latency: float = 0.0
    corrupt: bool = False


class Faults:
    def __init__(self):
        self.plan = FaultPlan()
        self.rng = random.Random()
        self.lock = threading.Lock()

    def set(self, **kw) -> None:
        with self.lock:
            self.plan = FaultPlan(**kw)

    def clear(self) -> None:
        self.set()

    def bandwidth_for(self, path: str) -> float | None:
        """The byte rate cap for this request (the test controls are never slowed)."""
        p = self.plan
        if p.bandwidth is None or path.startswith("/_emulator/"):
            return None
        if p.path_regex and not re.search(p.path_regex, path):
            return None
        return p.bandwidth

    def decide(self, path: str) -> Decision:
        p = self.plan
        if p.path_regex and not re.search(p.path_regex, path):
            return Decision()
        with self.lock:
            r = self.rng.random
            d = Decision(latency=p.latency)
            if r() < p.error_500:
                d.status = 500
            elif r() < p.error_503:
                d.status = 503
            elif r() < p.rate_429:
                d.status = 429
            d.reset = r() < p.reset
            d.reset_after = r() < p.reset_after
            d.corrupt = r() < p.corrupt_download
            return d


class RateLimits:
    """Sliding one-minute windows per user, like Box's per-user limits
    (about 1000 API calls and 240 uploads a minute)."""

    def __init__(self):
        self.api_per_minute: int | None = None
        self.uploads_per_minute: int | None = None
        self.calls: dict[tuple[str, str], deque] = defaultdict(deque)
        self.lock = threading.Lock()

    def set(self, api_per_minute: int | None = None, uploads_per_minute: int | None = None) -> None:
        with self.lock:
            self.api_per_minute, self.uploads_per_minute = api_per_minute, uploads_per_minute
            self.calls.clear()

    def check(self, user: str, is_upload: bool, now: float | None = None) -> float | None:
        """Record one call; return seconds to wait when over the limit (call not counted)."""
        now = time.monotonic() if now is None else now
        with self.lock:
            for kind, limit in (("api", self.api_per_minute), ("upload", self.uploads_per_minute if is_upload else None)):
                if limit is None:
                    continue
                q = self.calls[(user, kind)]
                while q and q[0] <= now - 60:
                    q.popleft()
                if len(q) >= limit:
                    return max(1.0, q[0] + 60 - now)
            for kind, limit in (("api", self.api_per_minute), ("upload", self.uploads_per_minute if is_upload else None)):
                if limit is not None:
                    self.calls[(user, kind)].append(now)
        return None

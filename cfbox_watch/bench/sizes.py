"""Workload sizes per mode, as plain data so that a scenario never hard-codes a size.

`full` is what issue 7 names; `quick` keeps the same shapes at sizes that finish in a
few minutes on two shared cores; `smoke` only proves the harness end to end (tests)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

KB = 1024
MB = 1024 * 1024


@dataclass(frozen=True)
class Sizes:
    mode: str
    small_files: int            # 1. small files out
    small_size: int
    small_workers: tuple[int, ...]
    big_size: int               # 2. big file out and 4. big file in
    latency_files: int          # 3. latency
    latency_gap: float          # seconds between two files being closed
    settle_time: float
    in_files: int               # 4. files in
    in_size: int
    idle_files: int             # 5. idle cost
    idle_seconds: float
    idle_poll_interval: float
    restart_files: int          # 6. restart cost
    restart_size: int
    rate_files: int             # 8. Box's real limits
    rate_api_per_minute: int
    rate_uploads_per_minute: int


SMOKE = Sizes(mode="smoke", small_files=12, small_size=16 * KB, small_workers=(2,),
              big_size=24 * MB, latency_files=3, latency_gap=0.2, settle_time=0.3,
              in_files=8, in_size=16 * KB, idle_files=20, idle_seconds=2.0,
              idle_poll_interval=1.0, restart_files=20, restart_size=4 * KB,
              rate_files=0, rate_api_per_minute=1000, rate_uploads_per_minute=240)

QUICK = Sizes(mode="quick", small_files=300, small_size=256 * KB, small_workers=(1, 4, 8),
              big_size=128 * MB, latency_files=40, latency_gap=0.3, settle_time=1.0,
              in_files=150, in_size=256 * KB, idle_files=1000, idle_seconds=30.0,
              idle_poll_interval=10.0, restart_files=1000, restart_size=16 * KB,
              rate_files=260, rate_api_per_minute=1000, rate_uploads_per_minute=240)

FULL = Sizes(mode="full", small_files=2000, small_size=256 * KB, small_workers=(1, 4, 8),
             big_size=1024 * MB, latency_files=200, latency_gap=0.5, settle_time=3.0,
             in_files=500, in_size=256 * KB, idle_files=10_000, idle_seconds=60.0,
             idle_poll_interval=15.0, restart_files=100_000, restart_size=4 * KB,
             rate_files=500, rate_api_per_minute=1000, rate_uploads_per_minute=240)

MODES = {"smoke": SMOKE, "quick": QUICK, "full": FULL}


def with_overrides(sizes: Sizes, items: list[str]) -> Sizes:
    """`["restart_files=10000", ...]` applied to a mode's sizes; the mode name records it."""
    changes: dict = {}
    kinds = {f.name: f.type for f in fields(Sizes)}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in kinds or key == "mode":
            raise ValueError(f"{item!r}: expected SIZE=N with SIZE one of "
                             f"{', '.join(k for k in kinds if k != 'mode')}")
        try:
            kind = kinds[key]
            if "tuple" in str(kind):
                changes[key] = tuple(int(x) for x in value.split(","))
            elif "float" in str(kind):
                changes[key] = float(value)
            else:
                changes[key] = int(value)
        except ValueError:
            raise ValueError(f"{item!r}: {value!r} is not a number") from None
    if not changes:
        return sizes
    return replace(sizes, mode=sizes.mode + "+" + ",".join(f"{k}={v}" for k, v in changes.items()), **changes)

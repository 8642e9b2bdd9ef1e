"""Scenario 6 with a real IN_Q_OVERFLOW: the kernel's inotify queue is made tiny for the
daemon's watch (the limit is read when the inotify instance is created), a burst of files
overflows it, and the rescan that the overflow triggers must still bring every file.

The periodic rescan is set to an hour, so nothing but the overflow handling can explain
the files that the watch lost.  Needs root (CI runs as root); skipped otherwise.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from harness import report, scale, wait_until, write_out

SYSCTL = Path("/proc/sys/fs/inotify/max_queued_events")


@pytest.fixture
def tiny_inotify_queue():
    try:
        old = SYSCTL.read_text().strip()
        SYSCTL.write_text("16\n")
    except OSError as e:
        pytest.skip(f"cannot lower {SYSCTL} here ({e.strerror}); the overflow path needs root")
    try:
        yield lambda: SYSCTL.write_text(old + "\n")
    finally:
        SYSCTL.write_text(old + "\n")


def test_real_inotify_overflow_triggers_a_rescan_that_finds_every_file(studio, tiny_inotify_queue):
    n = scale(600, 20000)
    s = studio(inc=False, settle_time="0.3s", workers=8, mapping={"rescan_interval": "1h"})
    s.config["connections"]["emu"].update(api_calls_per_minute=100000, uploads_per_minute=100000)
    s.write_config()
    proc = s.start()
    wait_until(lambda: "ready (" in s.daemon_output(), 60, "the daemon's READY")
    tiny_inotify_queue()   # the daemon's watch keeps its 16-event queue; nobody else needs one
    rng = random.Random(6)
    expected = {}
    t0 = time.monotonic()
    for i in range(n):
        rel = f"burst/d{i % 13}/f-{i:05d}.bin"
        expected[rel] = write_out(s.out, rel, rng.randbytes(100))
    wait_until(lambda: len(s.box_out()) >= n, scale(240, 3000), f"all {n} files on Box", step=1.0)
    took = time.monotonic() - t0
    out = s.daemon_output()
    assert "overflow" in out.lower(), "the burst did not overflow the 16-event queue"
    assert s.stop(proc) == 0
    s.assert_outgoing_exact(expected)
    report("inotify_overflow", files=n, queue_events=16, seconds_to_all_on_box=round(took, 1),
           lost=0, duplicates=0)

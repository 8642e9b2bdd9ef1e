"""The in-flight transfer registry behind `status` progress and progress log lines."""

import time

from cfbox_watch.progress import Transfers


def test_only_large_transfers_are_listed_and_they_leave_when_done():
    reg = Transfers(min_size=100, every=60)
    small = reg.begin("small.jpg", 99)
    with reg.begin("big.tif", 1000) as big:
        big.update(250)
        assert reg.snapshot() == [{"path": "big.tif", "done": 250, "size": 1000}]
        small.update(99)
        assert [t["path"] for t in reg.snapshot()] == ["big.tif"]
    small.end()
    assert reg.snapshot() == []


def test_progress_lines_are_due_at_most_every_interval():
    reg = Transfers(min_size=1, every=0.2)
    t = reg.begin("a", 10)
    assert t.update(1) is False            # not before the first interval
    time.sleep(0.25)
    assert t.update(5) is True
    assert t.update(6) is False            # the next one waits again
    assert t.describe().startswith("60% of 0 MB")
    small = Transfers(min_size=100, every=0).begin("b", 10)
    assert small.update(5) is False        # small transfers never log progress

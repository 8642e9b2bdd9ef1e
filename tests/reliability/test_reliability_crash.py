"""Scenario 1, crash anywhere: files flow out (three of them chunked) and in while the daemon
is killed with SIGKILL at seeded random moments and restarted; afterwards every file is on
each side exactly once, SHA-1 equal, with one Box version and no temporaries."""

from __future__ import annotations

import os
import random
import time

from harness import have_all, report, scale, temporaries, vendor_files, wait_until, write_out

SEED = 20261129


def test_kill_9_at_random_moments_every_file_exactly_once(studio, emulator):
    rng = random.Random(SEED)
    n_out, n_in, kills = scale((120, 50, 4), (500, 200, 10))
    big_size = scale(3_000_000, 60_000_000)
    part = scale(512 * 1024, 8 * 1024 * 1024)
    # Chunked sessions for the three big files (the emulator's minimum lowered to match).
    emulator.control.settings(chunk_min=1_000_000, part_size=part)
    # A little latency on every call, so the kills land among requests in flight.
    emulator.control.faults(latency=0.02)
    s = studio(workers=4, mapping={"chunked_threshold": "1MB", "part_workers": 2})

    expected_out = {}
    for i in range(n_out):
        expected_out[f"shoot{i % 7}/img-{i:04d}.bin"] = write_out(
            s.out, f"shoot{i % 7}/img-{i:04d}.bin", rng.randbytes(rng.randint(1, 40_000)))
    for i in range(3):
        expected_out[f"big/plate-{i}.raw"] = write_out(s.out, f"big/plate-{i}.raw", rng.randbytes(big_size + i))
    spec = {f"returns/r{i % 5}/ret-{i:04d}.jpg": rng.randbytes(rng.randint(1, 30_000)) for i in range(n_in)}
    half = dict(list(spec.items())[: n_in // 2])
    expected_in = vendor_files(emulator, half)

    t0 = time.monotonic()
    kill_points = []
    for k in range(kills):
        proc = s.start()
        delay = rng.uniform(0.8, 4.0)
        kill_points.append(round(delay, 2))
        time.sleep(delay)
        assert proc.poll() is None, f"daemon exited on its own: {s.daemon_output()[-2000:]}"
        s.kill9(proc)
        if k == kills // 2:  # the second half of the vendor's returns lands while the daemon is down
            expected_in.update(vendor_files(emulator, dict(list(spec.items())[n_in // 2:])))
    after_kills_out = len(s.box_out())
    after_kills_in = sum(1 for _ in s.inc.rglob("*") if _.is_file()) if s.inc.exists() else 0

    proc = s.start()
    wait_until(lambda: len(s.box_out()) >= len(expected_out), scale(120, 900), "every outgoing file on Box")
    wait_until(lambda: have_all(s.inc, expected_in), scale(120, 900), "every incoming file locally")
    time.sleep(2.5)  # a duplicate or a second version would show up now
    assert s.stop(proc) == 0
    total = time.monotonic() - t0

    s.assert_outgoing_exact(expected_out)
    s.assert_incoming_exact(expected_in)
    assert temporaries(s.inc) == []
    # A chunked upload finished by a later run: the Box bytes equal the local file.
    big = emulator.control.find(emulator.folders["upload"], "big/plate-0.raw")
    assert emulator.control.file_content(big["id"]) == (s.out / "big/plate-0.raw").read_bytes()
    counters = emulator.control.counters()
    report("crash", seed=SEED, files_out=len(expected_out), chunked=3, chunked_size=big_size,
           files_in=len(expected_in), kills=kills, kill_after_s=kill_points,
           on_box_after_kills=after_kills_out, local_after_kills=after_kills_in,
           box_calls=counters.get("total"), duplicates=0, lost=0, extra_versions=0, temporaries=0,
           seconds=round(total, 1))

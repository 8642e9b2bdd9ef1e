"""Scenarios 11 and 12: a damaged state DB (truncated, locked by another process,
deleted) and two daemons with separate state on one folder.  In no case a storm of
duplicate uploads or duplicate local copies."""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time

import pytest

from harness import have_all, report, scale, vendor_files, wait_until, write_out


def uploads(counters: dict) -> int:
    """Requests that send file content (direct uploads, versions, session parts)."""
    return sum(v for k, v in counters.items()
               if k.startswith(("POST /api/2.0/files", "PUT /api/2.0/files/upload_sessions")))


def downloads(counters: dict) -> int:
    return counters.get("GET /2.0/files/{id}/content", 0)


def _first_run(s, emulator, n_out, n_in, rng):
    out = {f"a/f-{i:03d}.bin": write_out(s.out, f"a/f-{i:03d}.bin", rng.randbytes(3000)) for i in range(n_out)}
    inc = vendor_files(emulator, {f"r/b-{i:03d}.jpg": rng.randbytes(3000) for i in range(n_in)})
    proc = s.start()
    wait_until(lambda: len(s.box_out()) >= n_out and have_all(s.inc, inc), 90, "the first run")
    time.sleep(1.0)
    assert s.stop(proc) == 0
    return out, inc


def _state_files(s):
    return [s.state / n for n in ("state.sqlite3", "state.sqlite3-wal", "state.sqlite3-shm")]


@pytest.mark.parametrize("damage", ["truncated", "deleted", "garbage"])
def test_damaged_state_db_gives_a_clear_error_or_a_safe_rebuild(studio, emulator, damage):
    rng = random.Random(5)
    n_out, n_in = scale((20, 10), (200, 100))
    s = studio(poll_interval="1s")
    out, inc = _first_run(s, emulator, n_out, n_in, rng)
    db = s.state / "state.sqlite3"
    if damage == "truncated":
        for p in _state_files(s)[1:]:
            p.unlink(missing_ok=True)
        size = db.stat().st_size
        with open(db, "r+b") as f:
            f.truncate(size // 2)
    elif damage == "deleted":
        for p in _state_files(s):
            p.unlink(missing_ok=True)
    else:
        for p in _state_files(s)[1:]:
            p.unlink(missing_ok=True)
        with open(db, "r+b") as f:
            f.seek(0)
            f.write(os.urandom(4096))
    emulator.control.reset_counters()
    proc = s.start()
    time.sleep(scale(4.0, 15.0))
    refused = proc.poll() is not None
    text = s.output_files[-1].read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]
    if refused:
        # A clear refusal naming the file and the way out; then follow the advice.
        assert proc.returncode == 78 and str(db) in text and "damaged" in text, text[-2000:]
        for p in _state_files(s):
            p.rename(p.with_name(p.name + ".damaged")) if p.exists() else None
        proc = s.start()
        time.sleep(scale(4.0, 15.0))
    assert proc.poll() is None, s.output_files[-1].read_text(errors="replace")[-2000:]
    assert s.stop(proc) == 0
    assert "Traceback" not in s.output_files[-1].read_text(errors="replace")
    counters = emulator.control.counters()
    # Whatever the daemon chose, nothing is on either side twice.
    s.assert_outgoing_exact(out)
    s.assert_incoming_exact(inc)
    unchanged = s.output_files[-1].read_text(errors="replace").count("ACTION=unchanged")
    report("damaged_state", damage=damage, daemon=("refused (78), rebuilt after the file was moved aside"
                                                   if refused else "rebuilt and ran"),
           files_out=n_out, files_in=n_in, upload_requests_after=uploads(counters),
           recognised_unchanged=unchanged, downloads_after=downloads(counters), duplicates=0, extra_versions=0)
    # State lost: small files are offered again and Box's 409 shows the same SHA-1
    # ("unchanged"); nothing new is created and nothing is downloaded again.
    assert downloads(counters) == 0
    assert unchanged == n_out


def test_state_db_locked_by_another_process(studio, emulator):
    rng = random.Random(6)
    s = studio(poll_interval="1s")
    out, inc = _first_run(s, emulator, 10, 5, rng)
    lock = sqlite3.connect(s.state / "state.sqlite3", timeout=1, isolation_level=None, check_same_thread=False)
    lock.execute("BEGIN EXCLUSIVE")
    t0 = time.monotonic()
    proc = s.start()
    more = {f"a/late-{i}.bin": write_out(s.out, f"a/late-{i}.bin", rng.randbytes(2000)) for i in range(5)}
    time.sleep(4.0)
    held_alive = proc.poll() is None
    lock.execute("ROLLBACK")
    lock.close()
    if held_alive:
        wait_until(lambda: len(s.box_out()) >= len(out) + len(more), 90, "the queue after the lock is released")
        time.sleep(1.0)
        assert s.stop(proc) == 0
        s.assert_outgoing_exact({**out, **more})
    else:
        text = s.daemon_output()
        assert "Traceback" not in text and "lock" in text.lower(), text[-2000:]
        s.assert_outgoing_exact(out)
    s.assert_incoming_exact(inc)
    report("state_locked", lock_held_s=4.0, daemon=("waited, then ran" if held_alive else f"exited {proc.returncode}"),
           seconds=round(time.monotonic() - t0, 1), duplicates=0)


def test_two_daemons_one_folder_every_file_once(studio, emulator):
    rng = random.Random(12)
    n = scale(40, 300)
    a = studio(name="a", inc=False)
    b = studio(name="b", inc=False)
    b.out.rmdir()
    b.config["post_production"][0]["outgoing"] = str(a.out)
    b.write_config()
    expected = {}
    pa, pb = a.start(), b.start()
    for i in range(n):
        rel = f"s{i % 3}/img-{i:04d}.bin"
        expected[rel] = write_out(a.out, rel, rng.randbytes(rng.randint(100, 20_000)))
        if i % 10 == 0:
            time.sleep(0.05)
    wait_until(lambda: len(a.box_out()) >= n, scale(90, 600), "every file on Box")
    time.sleep(2.0)
    assert a.stop(pa) == 0 and b.stop(pb) == 0
    a.assert_outgoing_exact(expected)
    report("two_daemons", files=n, on_box=len(a.box_out()), duplicates=0, extra_versions=0)

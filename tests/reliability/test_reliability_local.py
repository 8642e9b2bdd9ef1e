"""Scenarios 5-9 on the local side, with the real daemon: writers, event loss, disk full
and a read-only incoming folder, hostile names both ways, symlinks and special files."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import socket
import subprocess
import threading
import time
import unicodedata

import pytest

from harness import (have_all, local_files, report, scale, sha1, temporaries, vendor_files, wait_until,
                     write_out)


def _alive(s, proc):
    assert proc.poll() is None, "the daemon died:\n" + s.daemon_output()[-3000:]


def _no_escape(root, before: set[str]):
    """Nothing was written next to the watched/incoming folder (only inside it)."""
    after = {p.name for p in root.parent.iterdir() if not p.name.endswith(".log") and p.name != "state"}
    assert after <= before | {root.name}, f"written outside {root}: {sorted(after - before)}"


def test_writers_each_give_the_final_content_once(studio, emulator):
    big_size = scale(200_000_000, 2_000_000_000)
    s = studio(inc=False, settle_time="1s", mapping={"check_images": False})
    proc = s.start()
    expected = {}
    t0 = time.monotonic()

    def slow_appender():
        p = s.out / "slow.bin"
        data = b""
        with open(p, "ab") as f:
            for i in range(8):
                chunk = bytes([i]) * 50_000
                f.write(chunk)
                f.flush()
                data += chunk
                time.sleep(0.3)
        expected["slow.bin"] = sha1(data)

    def rewriter():
        p = s.out / "rewritten.bin"
        for i in range(6):
            data = os.urandom(30_000 + i)
            with open(p, "r+b" if p.exists() else "wb") as f:  # in place, same inode
                f.seek(0)
                f.write(data)
                f.truncate()
            time.sleep(0.2)
        expected["rewritten.bin"] = sha1(data)

    def rsync_style():
        data = os.urandom(80_000)
        tmp = s.out / ".synced.bin.Xa81Qz"
        with open(tmp, "wb") as f:
            for i in range(4):
                f.write(data[i * 20_000:(i + 1) * 20_000])
                f.flush()
                time.sleep(0.3)
        os.rename(tmp, s.out / "synced.bin")
        expected["synced.bin"] = sha1(data)

    def vanishing():
        p = s.out / "vanishes.bin"
        p.write_bytes(os.urandom(10_000))
        time.sleep(0.3)
        p.unlink()

    def big_copy():
        src = s.root / "big-source.bin"
        h = hashlib.sha1()
        with open(src, "wb") as f:
            block = os.urandom(1 << 20)
            for i in range(big_size // len(block)):
                f.write(block)
                h.update(block)
        shutil.copyfile(src, s.out / "big.bin")
        src.unlink()
        expected["big.bin"] = h.hexdigest()

    threads = [threading.Thread(target=fn) for fn in (slow_appender, rewriter, rsync_style, vanishing, big_copy)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    # Replaced while uploading: a 60 MB file (chunked: above the 50 MiB default threshold)
    # is swapped for new content by a rename mid-transfer.
    wait_until(lambda: "big.bin" in s.box_out(), 120, "the big copy on Box")
    emulator.control.reset_counters()
    emulator.control.faults(latency=1.0, path_regex=r"upload_sessions")  # the swap lands before the commit
    first = os.urandom(60_000_000)
    write_out(s.out, "replaced.bin", first)
    wait_until(lambda: "PUT /api/2.0/files/upload_sessions/{id}" in emulator.control.counters(), 60,
               "the chunked upload to start")
    final = os.urandom(60_000_000)
    tmp = s.out / ".replaced.bin.tmp"
    tmp.write_bytes(final)
    os.rename(tmp, s.out / "replaced.bin")
    expected["replaced.bin"] = sha1(final)
    emulator.control.clear_faults()
    wait_until(lambda: all(s.box_out().get(k, {}).get("sha1") == v for k, v in expected.items()),
               scale(180, 900), "every writer's final content on Box")
    took = time.monotonic() - t0
    time.sleep(2.0)
    _alive(s, proc)
    assert s.stop(proc) == 0
    on_box = s.box_out()
    assert set(on_box) == set(expected), sorted(on_box)
    assert {k: v["sha1"] for k, v in on_box.items()} == expected
    versions = {k: v.get("version_count", 1) for k, v in on_box.items()}
    assert all(n == 1 for n in versions.values()), versions  # the replaced content never reached Box
    report("writers", writers=["slow appender", "in-place rewriter", "temp-then-rename", f"{big_size // 10**6} MB copy",
                               "deleted before settled", "replaced while uploading"],
           big_file_bytes=big_size, replaced_versions=versions["replaced.bin"], vanished_on_box=0,
           seconds=round(took, 1), duplicates=0)


def test_event_burst_and_files_created_during_watch_setup(studio, emulator):
    n = scale(1000, 30000)
    s = studio(inc=False, settle_time="0.3s", workers=8, mapping={"rescan_interval": "5s"})
    # The client-side limits (200 uploads/min by default, Box's real budget) would make
    # this a test of the rate limiter; the emulator sets none.
    s.config["connections"]["emu"].update(api_calls_per_minute=100000, uploads_per_minute=100000)
    s.write_config()
    expected = {}
    rng = random.Random(3)
    for i in range(n // 10):  # present before start, some written while the watch is set up
        rel = f"pre/d{i % 20}/f-{i:05d}.bin"
        expected[rel] = write_out(s.out, rel, rng.randbytes(200))
    proc = s.start()
    for i in range(n // 10, n // 5):
        rel = f"setup/d{i % 20}/f-{i:05d}.bin"
        expected[rel] = write_out(s.out, rel, rng.randbytes(200))
    t_burst = time.monotonic()
    for i in range(n // 5, n):  # the burst, as fast as Python writes, new folders included
        rel = f"burst/d{i % 97}/e{i % 7}/f-{i:05d}.bin"
        expected[rel] = write_out(s.out, rel, rng.randbytes(200))
    burst_s = time.monotonic() - t_burst
    wait_until(lambda: len(s.box_out()) >= n, scale(300, 3000), f"all {n} files on Box", step=1.0)
    took = time.monotonic() - t_burst
    time.sleep(2.0)
    _alive(s, proc)
    assert s.stop(proc) == 0
    s.assert_outgoing_exact(expected)
    report("event_loss", files=n, burst_write_seconds=round(burst_s, 1), seconds_to_all_on_box=round(took, 1),
           lost=0, duplicates=0)


def _mount_tmpfs(path, size="1m"):
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {r.stderr.strip()}")


def test_disk_full_and_read_only_incoming_then_success(studio, emulator):
    s = studio(out=False, poll_interval="1s")
    _mount_tmpfs(s.inc)
    try:
        filler = s.inc / "studio-stuff.bin"
        filler.write_bytes(b"\0" * 700_000)
        big = os.urandom(600_000)
        expected = vendor_files(emulator, {"full/big.tif": big})
        proc = s.start()
        wait_until(lambda: "No space left on device" in s.daemon_output(), 60, "the disk-full error")
        time.sleep(1.0)
        _alive(s, proc)
        assert temporaries(s.inc) == [] and not (s.inc / "full" / "big.tif").exists()
        status = s.cli("status")
        filler.unlink()  # the admin frees space
        wait_until(lambda: have_all(s.inc, expected), 120, "the download once space returned")
        # Write permission taken away (as root, a read-only remount stands in for chmod).
        subprocess.run(["mount", "-o", "remount,ro", str(s.inc)], check=True)
        ro = vendor_files(emulator, {"ro/after.tif": os.urandom(1000)})
        wait_until(lambda: "Read-only file system" in s.daemon_output(), 60, "the read-only error")
        _alive(s, proc)
        subprocess.run(["mount", "-o", "remount,rw", str(s.inc)], check=True)
        expected.update(ro)
        wait_until(lambda: have_all(s.inc, expected), 120, "the download once writing is allowed again")
        time.sleep(1.0)
        assert s.stop(proc) == 0
        s.assert_incoming_exact(expected)
        assert temporaries(s.inc) == []
        text = s.daemon_output()
        assert "Traceback" not in text
        report("disk_full_permissions", disk_full_error="No space left on device" in text,
               read_only_error="Read-only file system" in text, status_exit=status.returncode,
               partial_files=0, recovered=len(expected))
    finally:
        subprocess.run(["umount", "-l", str(s.inc)], check=False)


def test_symlinks_and_special_files_never_leave_the_folder_nor_hang(studio, emulator, tmp_path):
    s = studio(inc=False)
    (s.out / "passwd-link").symlink_to("/etc/passwd")
    (s.out / "etc-dir-link").symlink_to("/etc")
    (s.out / "loop-a").symlink_to(s.out / "loop-b")
    (s.out / "loop-b").symlink_to(s.out / "loop-a")
    (s.out / "dir-loop").mkdir()
    (s.out / "dir-loop" / "up").symlink_to(s.out)
    os.mkfifo(s.out / "pipe.fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(s.out / "sock.sock"))
    expected = {"real.bin": write_out(s.out, "real.bin", b"real" * 100)}
    proc = s.start()
    try:
        wait_until(lambda: "real.bin" in s.box_out(), 60, "the real file")
        # Nothing hangs: new links and a file written afterwards still flow at once.
        (s.out / "shadow-link").symlink_to("/etc/shadow")
        os.mkfifo(s.out / "pipe2.fifo")
        t0 = time.monotonic()
        expected["after.bin"] = write_out(s.out, "after.bin", b"after" * 100)
        wait_until(lambda: "after.bin" in s.box_out(), 30, "a file written after the special files")
        latency = time.monotonic() - t0
        time.sleep(1.5)
        _alive(s, proc)
        assert s.stop(proc) == 0
    finally:
        sock.close()
    s.assert_outgoing_exact(expected)
    report("symlinks_special", specials=["link to /etc/passwd", "link to /etc", "symlink loop", "dir loop",
                                         "FIFO", "socket", "link to /etc/shadow"],
           uploaded_outside=0, hung=False, next_file_seconds=round(latency, 1))


OUT_NAMES = {
    # a stem the name contains -> the bytes name (os-level), as a studio export could produce it
    "trail": b"trail.bin ",
    "slash": b"b\\slash.bin",
    "ctl": b"ctl\x07char.bin",
    "badutf": b"badutf\xff\xfe.bin",
    "long": ("long" + "x" * 251).encode(),              # 255 bytes: fine locally, 255 chars on Box
    "toolong": ("toolong" + "\u00e9" * 124).encode(),   # 255 bytes locally, 131 characters
    "nfc": unicodedata.normalize("NFC", "nfc-caf\u00e9.bin").encode(),
    "nfd": unicodedata.normalize("NFD", "nfd-cafe\u0301.bin").encode(),
    "Case": b"Case.bin",
    "case": b"case.bin",
}


def test_hostile_names_both_ways_no_crash_no_escape_each_reported(studio, emulator):
    s = studio(poll_interval="1s")
    before = {p.name for p in s.root.iterdir()}
    out_b = os.fsencode(s.out)
    contents = {}
    for stem, name in OUT_NAMES.items():
        data = (stem * 50).encode()
        with open(os.path.join(out_b, name), "wb") as f:
            f.write(data)
        contents[name] = data
    # From Box: names Box accepts but a local disk may not take as they are.
    vendor = {
        "ret/" + "\u00e9" * 200 + ".jpg": b"too long locally",      # 400+ bytes in UTF-8
        "ret/ok.cfbox-tmp": b"reserved suffix",
        "ret/" + unicodedata.normalize("NFD", "re\u0301sume\u0301.jpg"): b"nfd",
        "ret/a:b*c?.jpg": b"odd but legal",
        "ret/-dash.jpg": b"dash",
        "ret/.hidden.jpg": b"hidden",
    }
    vendor_files(emulator, vendor)
    proc = s.start()
    time.sleep(8.0)
    _alive(s, proc)
    st = s.cli("status", "--json")
    assert s.stop(proc) == 0
    text = s.daemon_output()
    assert "Traceback" not in text
    reports = "\n".join(line for line in text.splitlines()
                        if any(w in line for w in ("warning", "error", "ACTION=failed", "ACTION=skipped", "refus")))
    on_box = s.box_out()
    # Whatever reached Box carries exactly the bytes of the local file it came from.
    by_content = {v: k for k, v in contents.items()}
    for rel, node in on_box.items():
        src = [n for n, d in contents.items() if sha1(d) == node["sha1"]]
        assert len(src) == 1, f"{rel!r} on Box matches no single local file"
        assert node.get("version_count", 1) == 1, (rel, node)
    # The two names that differ only by case: never one overwriting the other.
    case_on_box = [k for k in on_box if k.lower() == "case.bin"]
    assert len(case_on_box) == 1, case_on_box
    assert on_box[case_on_box[0]]["sha1"] == sha1(contents[case_on_box[0].encode()]), "one case twin overwrote the other"
    # Each name that did not reach Box is reported by a recognisable stem.
    sent_stems = {by_content[next(d for d in contents.values() if sha1(d) == node["sha1"])]
                  for node in on_box.values()}
    unsent = [stem for stem, name in OUT_NAMES.items() if name not in sent_stems]
    for stem in unsent:
        assert stem in reports, f"{OUT_NAMES[stem]!r} neither sent nor reported:\n{reports[-3000:]}"
    # Incoming: nothing outside the folder, nothing with the reserved suffix, every file either here or reported.
    _no_escape(s.inc, before)
    here = local_files(s.inc)
    assert not any(k.endswith(".cfbox-tmp") for k in here)
    missing_in = [rel for rel in vendor if not any(unicodedata.normalize("NFC", rel) ==
                                                   unicodedata.normalize("NFC", k) for k in here)]
    for rel in missing_in:
        stem = rel.split("/")[-1][:6]
        assert stem in reports, f"{rel!r} neither arrived nor reported:\n{reports[-3000:]}"
    report("names", out_names=len(OUT_NAMES), out_sent=len(on_box), out_reported=len(unsent),
           in_names=len(vendor), in_arrived=len(vendor) - len(missing_in), in_reported=len(missing_in),
           crashes=0, escapes=0, status_exit=st.returncode)

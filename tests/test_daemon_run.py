"""`cfbox-watch run` as systemd sees it: a real daemon subprocess, the real engines, the
emulator over HTTP, and a real unix datagram socket playing systemd's NOTIFY_SOCKET.

Test hooks used here (both tiny, both documented where they live):
- CFBOX_TEST_HANG_REMOTE=upload_file (cfbox_watch/daemon.py) makes that Box call block
  forever, so a real upload worker hangs;
- the hang test starts the daemon with the outgoing engine's HUNG_AFTER lowered from
  600 s to 3 s (a module constant set before main() runs), so it does not wait 10 min.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cfbox_watch.demo import png_bytes
from notify_socket import NotifySocket  # noqa: E402

PY = sys.executable


def write_yaml(path: Path, emulator, root: Path, *, delivery: bool = False, extra: dict | None = None,
               **top) -> dict:
    cfg = {
        "state_dir": str(root / "state"),
        "settle_time": "0.5s",
        "poll_interval": "2s",
        "shutdown_grace": "5s",
        "connections": {"emu": emulator.connection()},
        "post_production": [{
            "name": "acme", "connection": "emu",
            "outgoing": str(root / "out"), "upload_folder_id": emulator.folders["upload"],
            "download_folder_id": emulator.folders["download"], "incoming": str(root / "in"),
        }],
    }
    if delivery:
        cfg["delivery"] = [{"name": "brand", "connection": "emu", "source": str(root / "final"),
                            "folder_id": emulator.folders["delivery"]}]
    cfg.update(top)
    if extra:
        cfg.update(extra)
    (root / "out").mkdir(parents=True, exist_ok=True)
    (root / "final").mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    return cfg


def start_daemon(cfg: Path, notify: NotifySocket, log: Path, *, watchdog_usec=1_000_000,
                 env_extra=None, prelude: str | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items()
           if k not in ("JOURNAL_STREAM", "WATCHDOG_PID", "NOTIFY_SOCKET", "WATCHDOG_USEC")}
    env.update(NOTIFY_SOCKET=str(notify.path), PYTHONUNBUFFERED="1")
    if watchdog_usec:
        env["WATCHDOG_USEC"] = str(watchdog_usec)
    env.update(env_extra or {})
    if prelude:
        cmd = [PY, "-c", prelude + "\nfrom cfbox_watch.cli import main\nraise SystemExit(main())",
               "-c", str(cfg), "run"]
    else:
        cmd = [PY, "-m", "cfbox_watch", "-c", str(cfg), "run"]
    return subprocess.Popen(cmd, stdout=open(log, "ab"), stderr=subprocess.STDOUT, env=env)


def wait_until(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def stop(proc: subprocess.Popen, timeout: float = 30) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


@pytest.fixture
def notify(tmp_path):
    n = NotifySocket(Path(f"/tmp/cfbox-n-{os.getpid()}-{time.monotonic_ns()}.sock"))
    yield n
    n.close()
    n.path.unlink(missing_ok=True)


def test_ready_status_watchdog_reload_and_stop(tmp_path, emulator, notify):
    root = tmp_path / "studio"
    cfg = tmp_path / "cfbox.yaml"
    write_yaml(cfg, emulator, root)
    (root / "out" / "before-start.png").write_bytes(png_bytes(32, 32, 1))
    log = tmp_path / "daemon.log"
    proc = start_daemon(cfg, notify, log)
    try:
        t_ready, msg = notify.wait_for("READY=1", 60)
        # READY only after the start-up scan queued the file that was already there.
        db = sqlite3.connect(root / "state" / "state.sqlite3")
        assert db.execute("SELECT COUNT(*) FROM out_files WHERE relpath='before-start.png'").fetchone()[0] == 1
        assert any(line.startswith("STATUS=acme: ") for line in msg.split("\n")), msg
        wait_until(lambda: "before-start.png" in emulator.control.files(emulator.folders["upload"]),
                   30, "the start-up file on Box")

        # WATCHDOG at half of WATCHDOG_USEC (1 s -> every 0.5 s) while healthy.
        start = len(notify.snapshot())
        time.sleep(2.6)
        pings = [t for t, m in notify.snapshot()[start:] if m == "WATCHDOG=1"]
        assert 4 <= len(pings) <= 7, pings
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        assert all(0.3 < g < 0.8 for g in gaps), gaps

        # STATUS kept current: it reports the upload as the last success.
        wait_until(lambda: any(line.startswith("STATUS=acme: 0 queued") and "last never" not in line
                               for _, m in notify.snapshot() for line in m.split("\n")),
                   10, "STATUS with a last success")

        # SIGHUP with a valid new config: a delivery mapping is added, acme keeps running.
        write_yaml(cfg, emulator, root, delivery=True)
        mark = len(notify.snapshot())
        proc.send_signal(signal.SIGHUP)
        t_rel, m_rel = notify.wait_for("RELOADING=1", 10, after=mark)
        usec = int(m_rel.split("MONOTONIC_USEC=")[1].split("\n")[0])
        assert abs(usec / 1e6 - time.clock_gettime(time.CLOCK_MONOTONIC)) < 30
        t_ready2, _ = notify.wait_for("READY=1", 30, after=mark)
        assert t_ready2 >= t_rel
        (root / "final" / "hero.png").write_bytes(png_bytes(40, 20, 2))
        (root / "out" / "after-reload.png").write_bytes(png_bytes(20, 20, 3))
        wait_until(lambda: "hero.png" in emulator.control.files(emulator.folders["delivery"]),
                   30, "the new delivery mapping to upload")
        wait_until(lambda: "after-reload.png" in emulator.control.files(emulator.folders["upload"]),
                   30, "the kept mapping to go on")

        # SIGHUP with an invalid config: rejected, explained, old config keeps running.
        cfg.write_text(cfg.read_text() + "setle_time: 2s\n")
        mark = len(notify.snapshot())
        proc.send_signal(signal.SIGHUP)
        notify.wait_for("RELOADING=1", 10, after=mark)
        notify.wait_for("READY=1", 10, after=mark)
        wait_until(lambda: "setle_time" in log.read_text(), 10, "the reload problem in the log")
        text = log.read_text()
        assert "reload rejected" in text and "still running the previous one" in text
        (root / "final" / "after-bad-reload.png").write_bytes(png_bytes(30, 30, 4))
        wait_until(lambda: "after-bad-reload.png" in emulator.control.files(emulator.folders["delivery"]),
                   30, "the old config to keep working")
        assert proc.poll() is None

        mark = len(notify.snapshot())
        t0 = time.monotonic()
        assert stop(proc) == 0
        assert time.monotonic() - t0 < 10
        notify.wait_for("STOPPING=1", 1, after=mark)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # No secrets in the log.
    text = log.read_text()
    assert "BEGIN ENCRYPTED PRIVATE KEY" not in text and "Bearer " not in text


def test_hung_worker_stops_watchdog_pings(tmp_path, emulator, notify):
    root = tmp_path / "studio"
    cfg = tmp_path / "cfbox.yaml"
    write_yaml(cfg, emulator, root, shutdown_grace="2s")
    log = tmp_path / "daemon.log"
    proc = start_daemon(cfg, notify, log, env_extra={"CFBOX_TEST_HANG_REMOTE": "upload_file"},
                        prelude="import cfbox_watch.outgoing.engine as e; e.HUNG_AFTER = 3.0")
    try:
        notify.wait_for("READY=1", 60)
        time.sleep(1.5)
        assert notify.count("WATCHDOG=1") >= 2  # healthy while idle
        (root / "out" / "stuck.png").write_bytes(png_bytes(16, 16, 5))
        wait_until(lambda: "upload_file() blocks forever" in log.read_text(), 30,
                   "the upload worker to hang in the Box call")

        def pings_stopped():
            n = notify.count("WATCHDOG=1")
            time.sleep(2.5)  # five ping periods
            return notify.count("WATCHDOG=1") == n

        wait_until(pings_stopped, 20, "WATCHDOG=1 to stop while a worker hangs")
        assert "no progress in acme:out" in log.read_text()
        assert proc.poll() is None  # it is systemd that restarts it, not the daemon
        t0 = time.monotonic()
        assert stop(proc) == 0  # the hung thread is abandoned after shutdown_grace
        assert time.monotonic() - t0 < 8
        assert "still busy after 2 s: acme:out" in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigterm_during_uploads_then_restart_gives_every_file_once(tmp_path, emulator, notify):
    root = tmp_path / "studio"
    cfg = tmp_path / "cfbox.yaml"
    write_yaml(cfg, emulator, root, shutdown_grace="1s")
    files = {}
    for i in range(24):
        rel = f"shoot/{i // 8}/img-{i:02d}.png"
        path = root / "out" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        blob = png_bytes(64 + i, 64, i)
        path.write_bytes(blob)
        files[rel] = hashlib.sha1(blob).hexdigest()
    # Slow Box down so the SIGTERM lands in the middle of the work.
    emulator.control.faults(latency=0.4, path_regex=r"files/content")
    log = tmp_path / "daemon.log"
    proc = start_daemon(cfg, notify, log)
    try:
        notify.wait_for("READY=1", 60)
        wait_until(lambda: len(emulator.control.files(emulator.folders["upload"])) >= 3, 60,
                   "a few uploads")
        assert stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    first = emulator.control.files(emulator.folders["upload"])
    assert 0 < len(first) < len(files), "the stop must land mid-way for this test to mean anything"
    emulator.control.clear_faults()
    proc = start_daemon(cfg, notify, log)
    try:
        wait_until(lambda: len(emulator.control.files(emulator.folders["upload"])) == len(files), 60,
                   "all files after the restart")
        time.sleep(1.5)  # anything duplicated would show up now
        assert stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    on_box = emulator.control.files(emulator.folders["upload"])
    assert {k: v["sha1"] for k, v in on_box.items()} == files
    assert all(v.get("version_count", 1) == 1 for v in on_box.values()), on_box


def test_setup_error_stops_only_that_mapping_and_reload_retries_it(tmp_path, emulator, notify):
    """App not authorized in the Admin Console: the daemon still becomes READY, says why in
    STATUS=, and a reload after the admin's fix brings the stopped mapping back."""
    root = tmp_path / "studio"
    cfg = tmp_path / "cfbox.yaml"
    write_yaml(cfg, emulator, root)
    (root / "out" / "waiting.png").write_bytes(png_bytes(16, 16, 7))
    emulator.control.settings(app_authorized=False)
    log = tmp_path / "daemon.log"
    proc = start_daemon(cfg, notify, log)
    try:
        notify.wait_for("READY=1", 60)
        wait_until(lambda: any("STOPPED" in m for _, m in notify.snapshot()), 20,
                   "STATUS= to say the mapping stopped")
        assert proc.poll() is None
        emulator.control.settings(app_authorized=True)
        mark = len(notify.snapshot())
        proc.send_signal(signal.SIGHUP)
        notify.wait_for("READY=1", 30, after=mark)
        wait_until(lambda: "waiting.png" in emulator.control.files(emulator.folders["upload"]),
                   30, "the mapping to run again after the fix")
        assert stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_reload_that_changes_a_mapping_loses_no_queued_work(tmp_path, emulator, notify):
    """A changed mapping is stopped and started again mid-queue; every file still arrives once."""
    root = tmp_path / "studio"
    cfg = tmp_path / "cfbox.yaml"
    write_yaml(cfg, emulator, root, shutdown_grace="1s")
    expected = {}
    for i in range(16):
        blob = png_bytes(40 + i, 40, i)
        (root / "out" / f"f{i:02d}.png").write_bytes(blob)
        expected[f"f{i:02d}.png"] = hashlib.sha1(blob).hexdigest()
    emulator.control.faults(latency=0.4, path_regex=r"files/content")
    log = tmp_path / "daemon.log"
    proc = start_daemon(cfg, notify, log)
    try:
        notify.wait_for("READY=1", 60)
        wait_until(lambda: len(emulator.control.files(emulator.folders["upload"])) >= 2, 60,
                   "the first uploads")
        conf = yaml.safe_load(cfg.read_text())
        conf["post_production"][0]["settle_time"] = "0.3s"   # a change: acme:out restarts
        cfg.write_text(yaml.safe_dump(conf))
        mark = len(notify.snapshot())
        proc.send_signal(signal.SIGHUP)
        notify.wait_for("READY=1", 30, after=mark)
        assert len(emulator.control.files(emulator.folders["upload"])) < len(expected)
        emulator.control.clear_faults()
        wait_until(lambda: len(emulator.control.files(emulator.folders["upload"])) == len(expected),
                   60, "every file after the reload")
        time.sleep(1.0)
        assert stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "acme:out: changed; stopping it" in text and "acme:in: changed" not in text
    on_box = emulator.control.files(emulator.folders["upload"])
    assert {k: v["sha1"] for k, v in on_box.items()} == expected
    assert all(v.get("version_count", 1) == 1 for v in on_box.values())


def test_sigint_stops_like_sigterm(tmp_path, emulator, notify):
    root = tmp_path / "studio"
    cfg = tmp_path / "cfbox.yaml"
    write_yaml(cfg, emulator, root)
    proc = start_daemon(cfg, notify, tmp_path / "daemon.log", watchdog_usec=None)
    try:
        notify.wait_for("READY=1", 60)
        assert notify.count("WATCHDOG=1") == 0  # no WATCHDOG_USEC, no pings
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
        notify.wait_for("STOPPING=1", 1)
        assert "Traceback" not in (tmp_path / "daemon.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_under_systemd_file_outcomes_reach_the_journal_with_fields(tmp_path, emulator, notify):
    """JOURNAL_STREAM names the daemon's stderr, so it speaks the native journal protocol:
    one record per file outcome, carrying the fields an admin filters by."""
    from cfbox_watch.log import decode_journal

    journal_path = Path(f"/tmp/cfbox-j-{os.getpid()}-{time.monotonic_ns()}.sock")
    journal = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    journal.bind(str(journal_path))
    journal.settimeout(0.5)
    root = tmp_path / "studio"
    cfg = tmp_path / "cfbox.yaml"
    write_yaml(cfg, emulator, root)
    blob = png_bytes(24, 24, 9)
    (root / "out" / "sub dir").mkdir(parents=True)
    (root / "out" / "sub dir" / "a b.png").write_bytes(blob)
    err = open(tmp_path / "stderr", "w")
    st = os.fstat(err.fileno())
    env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}", "CFBOX_JOURNAL_SOCKET": str(journal_path)}
    full_env = {k: v for k, v in os.environ.items() if k not in ("WATCHDOG_USEC", "WATCHDOG_PID")}
    full_env.update(env, NOTIFY_SOCKET=str(notify.path))
    proc = subprocess.Popen([PY, "-m", "cfbox_watch", "-c", str(cfg), "run"],
                            stdout=subprocess.DEVNULL, stderr=err, env=full_env)
    records = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                records.append(decode_journal(journal.recv(1 << 20)))
            except socket.timeout:
                pass
            if any(r.get("ACTION") == "uploaded" for r in records) and any(
                    r.get("MESSAGE", "").startswith("ready") for r in records):
                break
        assert stop(proc) == 0
        while True:  # the records sent while stopping
            try:
                records.append(decode_journal(journal.recv(1 << 20)))
            except (socket.timeout, OSError):
                break
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        journal.close()
        journal_path.unlink(missing_ok=True)
        err.close()
    uploaded = [r for r in records if r.get("ACTION") == "uploaded"]
    assert len(uploaded) == 1, records
    r = uploaded[0]
    assert r["MAPPING"] == "acme" and r["PATH"] == "sub dir/a b.png", r
    assert r["SHA1"] == hashlib.sha1(blob).hexdigest() and r["SIZE"] == str(len(blob))
    assert r["BOX_FILE_ID"].isdigit() and float(r["DURATION_MS"]) >= 0
    assert r["PRIORITY"] == "6" and r["SYSLOG_IDENTIFIER"] == "cfbox-watch"
    assert any(x.get("MESSAGE", "").startswith("ready") for x in records)
    assert any(x.get("MESSAGE") == "stopped" for x in records), [x.get("MESSAGE") for x in records]
    stray = (tmp_path / "stderr").read_text()
    assert stray == "", stray   # everything went to the journal

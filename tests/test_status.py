"""`status [--json]` and `retry`, against state written by the real engines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from cfbox_watch.demo import png_bytes

PY = sys.executable

MAPPING_KEYS = {"name": str, "direction": str, "kind": str, "connection": str, "local": str,
                "folder_id": str, "state": str, "queued": int, "active": int, "failed": int,
                "done_today": int, "problems": list, "transfers": list}


def config(tmp_path: Path, emulator) -> Path:
    root = tmp_path / "studio"
    (root / "out").mkdir(parents=True, exist_ok=True)
    cfg = {
        "state_dir": str(root / "state"),
        "settle_time": "0.2s",
        "poll_interval": "2s",
        "connections": {"emu": emulator.connection()},
        "post_production": [{
            "name": "acme", "connection": "emu", "outgoing": str(root / "out"),
            "upload_folder_id": emulator.folders["upload"],
            "download_folder_id": emulator.folders["download"], "incoming": str(root / "in"),
        }],
    }
    path = tmp_path / "cfbox.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def cli(cfg: Path, *args: str, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "cfbox_watch", "-c", str(cfg), *args], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def check_shape(report: dict) -> None:
    assert report["version"] == 1
    assert set(report) >= {"version", "config", "state_db", "generated_at", "daemon", "mappings",
                           "connections"}
    assert set(report["daemon"]) >= {"running", "pid", "state", "last_seen"}
    assert isinstance(report["daemon"]["running"], bool)
    for m in report["mappings"]:
        for key, typ in MAPPING_KEYS.items():
            assert isinstance(m[key], typ), (key, m)
        assert m["direction"] in ("out", "in")
        assert m["last_success"] is None or isinstance(m["last_success"], str)
        assert m["error"] is None or isinstance(m["error"], str)
        for p in m["problems"]:
            assert set(p) == {"path", "status", "error", "attempts"}
    for c in report["connections"]:
        assert set(c) == {"name", "health", "message"}
        assert c["health"] in ("ok", "degraded", "error", "unknown")


def test_status_before_anything_ran(tmp_path, emulator):
    cfg = config(tmp_path, emulator)
    r = cli(cfg, "status", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    check_shape(report)
    assert report["daemon"] == {"running": False, "pid": None, "state": "never started", "last_seen": None}
    assert [(m["name"], m["direction"], m["queued"]) for m in report["mappings"]] == [
        ("acme", "out", 0), ("acme", "in", 0)]
    text = cli(cfg, "status")
    assert text.returncode == 0 and "daemon: never started" in text.stdout


def test_status_shows_failures_and_retry_requeues_them(tmp_path, emulator):
    cfg = config(tmp_path, emulator)
    out = tmp_path / "studio" / "out"
    (out / "good.png").write_bytes(png_bytes(12, 12, 1))
    (out / "cut.png").write_bytes(png_bytes(12, 12, 2)[:-20])
    assert cli(cfg, "once").returncode == 1

    report = json.loads(cli(cfg, "status", "--json").stdout)
    check_shape(report)
    acme_out = next(m for m in report["mappings"] if m["direction"] == "out")
    assert acme_out["failed"] == 1 and acme_out["done_today"] == 1
    assert acme_out["last_success"] is not None
    assert [p["path"] for p in acme_out["problems"]] == ["cut.png"]
    assert acme_out["problems"][0]["error"]
    text = cli(cfg, "status").stdout
    assert "1 done today, 1 failed" in text and "cut.png" in text

    bad = cli(cfg, "retry", "--mapping", "nope")
    assert bad.returncode == 64 and "no mapping named 'nope'" in bad.stderr and "acme" in bad.stderr
    assert "nothing failed" in cli(cfg, "retry", "--mapping", "acme", "other.png").stdout
    r = cli(cfg, "retry", "--mapping", "acme")
    assert r.returncode == 0 and "requeued 1 item in acme (1 outgoing, 0 incoming)" in r.stdout
    acme_out = next(m for m in json.loads(cli(cfg, "status", "--json").stdout)["mappings"]
                    if m["direction"] == "out")
    assert acme_out["failed"] == 0 and acme_out["queued"] == 1
    # Fixed export, next pass sends it.
    (out / "cut.png").write_bytes(png_bytes(12, 12, 2))
    assert cli(cfg, "once").returncode == 0
    assert "cut.png" in emulator.control.files(emulator.folders["upload"])


def test_status_while_the_daemon_runs(tmp_path, emulator):
    cfg = config(tmp_path, emulator)
    (tmp_path / "studio" / "out" / "a.png").write_bytes(png_bytes(12, 12, 1))
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM")}
    proc = subprocess.Popen([PY, "-m", "cfbox_watch", "-c", str(cfg), "run"], env=env,
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "daemon.log", "w"))
    try:
        deadline = time.monotonic() + 60
        while True:
            report = json.loads(cli(cfg, "status", "--json").stdout)
            out = report["mappings"][0]
            if report["daemon"]["running"] and out["done_today"] == 1:
                break
            assert time.monotonic() < deadline, report
            time.sleep(0.3)
        check_shape(report)
        assert report["daemon"]["pid"] == proc.pid
        # the daemon refreshes its table every 2 s, so a Side may still read "starting"
        assert {m["state"] for m in report["mappings"]} <= {"starting", "running", "idle"}
        assert report["connections"] == [{"name": "emu", "health": "ok", "message": None}]

        # Box goes away while a new file waits: the connection reads "degraded", with why.
        emulator.stop()
        (tmp_path / "studio" / "out" / "b.png").write_bytes(png_bytes(12, 12, 2))
        deadline = time.monotonic() + 30
        while True:
            report = json.loads(cli(cfg, "status", "--json").stdout)
            conn = report["connections"][0]
            if conn["health"] == "degraded":
                break
            assert time.monotonic() < deadline, report
            time.sleep(0.5)
        assert "waiting to retry" in conn["message"] and "could not be reached" in conn["message"]
        assert "connection emu: degraded: 1 item(s) waiting to retry" in cli(cfg, "status").stdout
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        report = json.loads(cli(cfg, "status", "--json").stdout)
        assert report["daemon"]["running"] is False and report["daemon"]["state"] == "stopped"
        assert report["mappings"][0]["state"] == "not running"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_transfers_in_flight_are_shown_with_progress(tmp_path):
    """What the daemon persisted from a Side's summary() reaches `status` (no engine needed:
    the daemon's own writer and the real DB)."""
    from cfbox_watch import daemon, db, status
    from cfbox_watch.config_model import Config, Connection, OutgoingMapping

    m = OutgoingMapping(name="acme", kind="post_production", connection="c", local=tmp_path / "o",
                        folder_id="1", key_path="post_production[0]")
    cfg = Config(path=tmp_path / "cfbox.yaml", state_dir=tmp_path / "state",
                 connections={"c": Connection("c", tmp_path / "c.json")}, outgoing=(m,))
    conn = db.open_db(db.db_path(cfg.state_dir))
    db.ensure_schema(conn, "daemon", daemon.DAEMON_MIGRATIONS)
    daemon.write_daemon_state(conn, os.getpid(), daemon.side_specs(cfg), {"acme:out": {
        "state": "running", "active": 1,
        "transfers": [{"path": "big.tif", "done": 50_000_000, "size": 200_000_000},
                      {"path": "bad"}, "junk"]}})
    ro = db.open_db(db.db_path(cfg.state_dir), readonly=True)
    report = status.collect(cfg, ro)
    check_shape(report)
    assert report["daemon"]["running"] is True
    assert report["mappings"][0]["transfers"] == [
        {"path": "big.tif", "done": 50_000_000, "size": 200_000_000},
        {"path": "bad", "done": 0, "size": None}]   # size unknown; "junk" is dropped
    text = status.render_text(report)
    assert "  sending big.tif: 25% (50.0 of 200.0 MB)" in text and "  sending bad\n" in text

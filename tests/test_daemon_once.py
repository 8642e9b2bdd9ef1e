"""`cfbox-watch once`: both directions in one pass, and its exit codes (0 / 1 / 75 / 78)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

import yaml

from cfbox_watch.demo import png_bytes

PY = sys.executable


def config(tmp_path: Path, emulator, *, upload_folder=None, delivery=False) -> Path:
    root = tmp_path / "studio"
    (root / "out").mkdir(parents=True, exist_ok=True)
    cfg = {
        "state_dir": str(root / "state"),
        "settle_time": "0.2s",
        "poll_interval": "2s",
        "connections": {"emu": emulator.connection()},
        "post_production": [{
            "name": "acme", "connection": "emu", "outgoing": str(root / "out"),
            "upload_folder_id": upload_folder or emulator.folders["upload"],
            "download_folder_id": emulator.folders["download"], "incoming": str(root / "in"),
        }],
    }
    if delivery:
        (root / "final").mkdir(parents=True, exist_ok=True)
        cfg["delivery"] = [{"name": "brand", "connection": "emu", "source": str(root / "final"),
                            "folder_id": emulator.folders["delivery"]}]
    path = tmp_path / "cfbox.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def once(cfg: Path, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "cfbox_watch", "-c", str(cfg), "once"], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_once_moves_both_ways_then_has_nothing_to_do(tmp_path, emulator):
    cfg = config(tmp_path, emulator, delivery=True)
    root = tmp_path / "studio"
    out = {"a.png": png_bytes(20, 20, 1), "sub/b.png": png_bytes(21, 20, 2)}
    for rel, data in out.items():
        (root / "out" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "out" / rel).write_bytes(data)
    (root / "final" / "final.png").write_bytes(png_bytes(30, 10, 3))
    returned = png_bytes(22, 22, 4)
    emulator.control.vendor_upload(emulator.folders["download"], "a_retouched.png", returned)

    r = once(cfg)
    assert r.returncode == 0, r.stderr
    on_box = emulator.control.files(emulator.folders["upload"])
    assert {k: v["sha1"] for k, v in on_box.items()} == {
        k: hashlib.sha1(v).hexdigest() for k, v in out.items()}
    assert "final.png" in emulator.control.files(emulator.folders["delivery"])
    assert (root / "in" / "a_retouched.png").read_bytes() == returned
    # One line per file outcome, with the mapping.
    assert "uploaded a.png" in r.stderr and "MAPPING=acme" in r.stderr

    emulator.control.reset_counters()
    r2 = once(cfg)
    assert r2.returncode == 0, r2.stderr
    counters = emulator.control.counters()
    uploads = {k: v for k, v in counters.items() if "content" in k and k.startswith("POST")}
    assert not uploads, counters


def test_once_exit_78_when_a_folder_is_not_shared(tmp_path, emulator):
    cfg = config(tmp_path, emulator, upload_folder="987654321")
    (tmp_path / "studio" / "out" / "x.png").write_bytes(png_bytes(8, 8, 1))
    r = once(cfg)
    assert r.returncode == 78, r.stderr
    assert "Traceback" not in r.stderr
    assert "post_production[0]" in r.stderr and "not visible to the service account" in r.stderr


def test_once_exit_1_when_an_item_fails(tmp_path, emulator):
    cfg = config(tmp_path, emulator)
    good = png_bytes(10, 10, 1)
    (tmp_path / "studio" / "out" / "truncated.png").write_bytes(good[:-20])  # an export cut short
    t0 = time.monotonic()
    r = once(cfg)
    assert r.returncode == 1, r.stderr
    assert time.monotonic() - t0 < 60
    assert "truncated.png" in r.stderr and "Traceback" not in r.stderr


def test_once_exit_75_when_box_is_unreachable(tmp_path, emulator):
    cfg = config(tmp_path, emulator)
    emulator.stop()
    t0 = time.monotonic()
    r = once(cfg, timeout=240)
    assert r.returncode == 75, r.stderr
    assert "Traceback" not in r.stderr
    print(f"once against a stopped Box took {time.monotonic() - t0:.1f} s")


def test_once_sigterm_stops_early_and_the_next_pass_finishes(tmp_path, emulator):
    import signal

    cfg = config(tmp_path, emulator)
    expected = {}
    for i in range(12):
        blob = png_bytes(30 + i, 30, i)
        (tmp_path / "studio" / "out" / f"f{i:02d}.png").write_bytes(blob)
        expected[f"f{i:02d}.png"] = hashlib.sha1(blob).hexdigest()
    emulator.control.faults(latency=0.5, path_regex=r"files/content")
    proc = subprocess.Popen([PY, "-m", "cfbox_watch", "-c", str(cfg), "once"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not emulator.control.files(emulator.folders["upload"]):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, err
    assert time.monotonic() - t0 < 15 and "Traceback" not in err
    assert len(emulator.control.files(emulator.folders["upload"])) < len(expected)
    emulator.control.clear_faults()
    r = once(cfg)
    assert r.returncode == 0, r.stderr
    on_box = emulator.control.files(emulator.folders["upload"])
    assert {k: v["sha1"] for k, v in on_box.items()} == expected
    assert all(v.get("version_count", 1) == 1 for v in on_box.values())

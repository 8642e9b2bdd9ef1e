"""The benchmark harness end to end at tiny sizes: it starts its own emulator, runs the
daemon as subprocesses, and writes JSON + Markdown with every figure and the machine.

The figures themselves are not checked (timing belongs in benchmarks, not tests); the
test checks that each measurement produced a number, that the files have the keys the
docs promise, and that the run took seconds, not minutes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]

EXPECTED_KEYS = {
    "small_out_w2", "small_out_cpu_w2", "big_out", "big_out_local",
    "latency_p50", "latency_p95", "latency_over_settle_p50",
    "files_in", "big_in", "big_in_local",
    "restart_ready", "restart_idle", "restart_files_read", "restart_calls",
    "idle_cpu", "idle_rss", "idle_calls", "api_idle_interval", "api_idle_listings",
    "api_per_upload", "api_per_download",
}


@pytest.mark.timeout(120)
def test_smoke_run_writes_json_and_markdown(tmp_path):
    out = tmp_path / "results"
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "cfbox_watch.bench", "--smoke", "--out", str(out),
                           "--work", str(tmp_path / "work")],
                          cwd=PROJECT, capture_output=True, text=True, timeout=110)
    took = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert took < 90, f"the smoke run took {took:.0f} s"

    result = json.loads((out / "latest-smoke.json").read_text())
    assert result["mode"] == "smoke" and result["failed"] is None
    assert result["command"].startswith("python -m cfbox_watch.bench") and "--smoke" in result["command"]
    m = result["machine"]
    assert m["cores"] >= 1 and m["memory_gib"] > 0 and m["python"].startswith("3.")
    rows = {r["key"]: r for r in result["rows"]}
    assert EXPECTED_KEYS <= set(rows), sorted(EXPECTED_KEYS - set(rows))
    for key in EXPECTED_KEYS:
        r = rows[key]
        assert isinstance(r["value"], (int, float)) and r["value"] >= 0, r
        assert r["unit"] and r["measure"], r
    # throughput figures have a ceiling measured in the same run
    for key in ("small_out_w2", "big_out", "big_out_local", "files_in", "big_in", "big_in_local"):
        assert rows[key]["ceiling"] > 0 and rows[key]["ratio"] > 0, rows[key]
    # the daemon really moved the files: per-file API calls are counted by the emulator
    assert rows["api_per_upload"]["value"] >= 1
    assert rows["api_per_download"]["value"] >= 1
    assert result["details"]["small_out"]["workers_2"]["daemon"]["counters"]["total"] > 0

    md = (out / "latest-smoke.md").read_text()
    assert "| # | Measure | Value |" in md
    assert f"{m['cores']} cores" in md and "Command: `python -m cfbox_watch.bench" in md
    for key in ("Small files out, workers 2", "Latency close -> committed on Box, p95", "unchanged files: time to READY"):
        assert key in md
    # the printed table matches the files, and scratch data was kept only where asked
    assert "Small files out, workers 2" in proc.stdout
    assert not list((tmp_path / "work").glob("emu-*")), "emulator data folders were left behind"


def test_unknown_only_name_is_a_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "cfbox_watch.bench", "--smoke", "--only", "nonsense",
                           "--out", str(tmp_path)], cwd=PROJECT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "unknown --only name(s) nonsense" in proc.stderr and "Traceback" not in proc.stderr


def test_access_watch_sees_reads_not_stats(tmp_path):
    """The restart figure relies on it: a read is counted, a stat or a listing is not."""
    from cfbox_watch.bench.access import AccessWatch

    (tmp_path / "a").mkdir()
    for name in ("a/x.jpg", "a/y.jpg", "z.jpg"):
        (tmp_path / name).write_bytes(b"data")
    w = AccessWatch(tmp_path)
    (tmp_path / "a" / "x.jpg").stat()
    list((tmp_path / "a").iterdir())
    assert (tmp_path / "a" / "y.jpg").read_bytes() == b"data"
    got = w.stop()
    assert got == {"files_opened": 1, "files_read": 1}

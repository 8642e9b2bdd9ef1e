"""Latency from a file being closed to its upload committed on Box, with its parts.

Runs a real OutgoingSide (inotify watch, scheduler, workers, SQLite) in this process
against the emulator subprocess, because the parts are only visible from inside: the
engine's own "uploaded" log line carries DURATION_MS (claim to done), and a thin
recording wrapper around the real BoxRemote times each upload call. Nothing is
replaced: every call still goes through BoxRemote and box_sdk_gen over HTTP.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from pathlib import Path

from cfbox_watch.bench import workload
from cfbox_watch.bench.procs import Emulator

UPLOAD_CALLS = ("upload_file", "upload_version", "commit_session")


class RecordingRemote:
    """Delegates every attribute to the real BoxRemote; upload calls are timed by name."""

    def __init__(self, inner):
        self._inner = inner
        self.timings: dict[str, tuple[float, float]] = {}   # box name -> (start, end), time.time()
        self._lock = threading.Lock()

    def __getattr__(self, name):
        attr = getattr(self._inner, name)
        if name not in UPLOAD_CALLS:
            return attr

        def timed(*args, **kw):
            t0 = time.time()
            item = attr(*args, **kw)
            t1 = time.time()
            key = getattr(item, "name", None) or kw.get("name") or (args[1] if len(args) > 1 else "?")
            with self._lock:
                self.timings[str(key)] = (t0, t1)
            return item

        return timed


class _Uploaded(logging.Handler):
    """Collects the engine's one-line-per-file outcomes: relpath -> (time, DURATION_MS)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.done: dict[str, tuple[float, int]] = {}
        self.cond = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        f = getattr(record, "fields", None) or {}
        if f.get("ACTION") == "uploaded" and f.get("PATH"):
            with self.cond:
                self.done[f["PATH"]] = (record.created, int(f.get("DURATION_MS", 0)))
                self.cond.notify_all()


def percentile(values: list[float], p: float) -> float:
    v = sorted(values)
    if not v:
        return float("nan")
    k = (len(v) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def measure_latency(emu: Emulator, work: Path, *, files: int, gap: float, settle_time: float, size: int) -> dict:
    from cfbox_watch.box_adapter import BoxRemote
    from cfbox_watch.config import load_config
    from cfbox_watch.outgoing.engine import OutgoingSide
    from cfbox_watch.outgoing.uploader import hash_file

    src = work / "out"
    src.mkdir(parents=True)
    cfg_path = workload.write_config(
        work / "cfbox.yaml", state_dir=work / "state",
        connection=emu.connection(api_calls_per_minute=100_000, uploads_per_minute=100_000),
        delivery=[{"name": "latency", "source": str(src), "folder_id": emu.folders["delivery"],
                   "settle_time": settle_time}])
    config = load_config(cfg_path)
    mapping = config.outgoing[0]
    remote = RecordingRemote(BoxRemote.from_connection(config.connections[mapping.connection]))
    remote.whoami()   # sign in before the clock starts, as a running daemon already has
    handler = _Uploaded()
    logger = logging.getLogger("cfbox_watch")
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    side = OutgoingSide(config, mapping, remote)
    closed: dict[str, float] = {}
    payload = workload.jpeg_payload(size)
    try:
        side.start()
        deadline = time.monotonic() + 30
        while not side.ready():
            if time.monotonic() > deadline:
                raise RuntimeError("latency: the outgoing side did not become ready in 30 s")
            time.sleep(0.02)
        for i in range(files):
            rel = f"img{i:05d}.jpg"
            with open(src / rel, "wb") as f:
                f.write(workload.unique(payload, i))
            closed[rel] = time.time()
            time.sleep(gap)
        wait_until = time.monotonic() + settle_time + 60
        with handler.cond:
            while len(handler.done) < files and time.monotonic() < wait_until:
                handler.cond.wait(0.5)
    finally:
        side.request_stop()
        side.join(20)
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate
    missing = sorted(set(closed) - set(handler.done))
    if missing:
        raise RuntimeError(f"latency: {len(missing)} of {files} files were not uploaded (first: {missing[0]})")
    totals, waits, hashes, transfers, others = [], [], [], [], []
    for rel, t_close in closed.items():
        t_done, dur_ms = handler.done[rel]
        total = t_done - t_close
        t0 = time.perf_counter()
        hash_file(str(src / rel))
        h = time.perf_counter() - t0
        start, end = remote.timings.get(rel, (t_done, t_done))
        transfer = end - start
        totals.append(total)
        waits.append(total - dur_ms / 1000)
        hashes.append(h)
        transfers.append(transfer)
        others.append(max(0.0, dur_ms / 1000 - transfer - h))
    return {"files": files, "settle_time": settle_time, "gap_s": gap, "size": size,
            "p50": percentile(totals, 50), "p95": percentile(totals, 95), "max": max(totals),
            "wait_p50": percentile(waits, 50), "wait_p95": percentile(waits, 95),
            "hash_p50": percentile(hashes, 50), "transfer_p50": percentile(transfers, 50),
            "transfer_p95": percentile(transfers, 95), "other_p50": percentile(others, 50),
            "mean": statistics.fmean(totals)}

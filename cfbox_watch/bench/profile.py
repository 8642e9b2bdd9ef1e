"""Where the daemon's time goes in the small-files run: py-spy over `cfbox-watch once`.

py-spy samples every thread of the real subprocess from outside (no code change, no
tracing overhead inside the interpreter), so the profile is of the same run the
benchmark measures. The raw collapsed stacks are folded into plain categories and top
functions, which is what docs/benchmarks.md quotes. py-spy is a tool, not a dependency:
`pip install py-spy` (or the `bench` extra)."""

from __future__ import annotations

import re
import shutil
import sys
from collections import Counter
from pathlib import Path

from cfbox_watch.bench import workload
from cfbox_watch.bench.procs import run_once

HZ = 200

# Worker-thread samples are sorted into these, first match wins; the regexes run over
# the whole collapsed stack (outermost first).
WORKER_CATEGORIES: tuple[tuple[str, str], ...] = (
    ("download: SHA-1 + write of each chunk (C calls in downloader.download)",
     r"download \(cfbox_watch/incoming/downloader\.py:\d+\)$"),
    ("download: rename + folder fsync", r"_place|fsync_dir"),
    ("upload: waiting for Box's answer", r"(upload_file|upload_part|commit_session).*(readinto|getresponse|_read_status|recv)"),
    ("upload: sending the body", r"(upload_file|upload_part).*(send|MultipartStream|sendall)"),
    ("upload: SDK/adapter around the request", r"upload_file|upload_version|upload_part|commit_session|create_upload_session"),
    ("chunked: reading + hashing parts", r"Uploader\.(_run_session|chunked).*(read|sha1|hashlib)"),
    ("download: reading the body", r"(BoxRemote\.download|iter_content).*(readinto|recv|read)"),
    ("download: write + fsync", r"fsync|BufferedWriter|\.write \("),
    ("download: request and redirect", r"BoxRemote\.download|download_file"),
    ("listing Box folders", r"list_folder|get_folder_items"),
    ("rate limiter", r"ratelimit\.py"),
    ("state DB: opening a connection", r"open_db"),
    ("state DB: waiting for the write lock (BEGIN IMMEDIATE)", r"transaction\.__enter__"),
    ("Box folder id lookup/creation (_folder_for)", r"_folder_for"),
    ("state DB: queries and commits", r"sqlite3|cfbox_watch/db\.py|/outgoing/state\.py|/incoming/state\.py"),
    ("SHA-1 hashing", r"hash_file|hashlib|_sha1_of"),
    ("logging", r"logging/__init__|cfbox_watch/log\.py"),
    ("stat and image check", r"stat_file|image_problem|settle\.py"),
    ("waiting for parts / other threads", r"Condition\.wait|Event\.wait|_wait_for_tstate_lock|as_completed|Future\.result"),
)
WORKER_RX = r"_drain_worker|_worker_loop|_once_item|cfbox-part"


def find_pyspy() -> str | None:
    """py-spy on PATH, or next to this interpreter (a venv that is not activated)."""
    here = Path(sys.executable).parent / "py-spy"
    return shutil.which("py-spy") or (str(here) if here.exists() else None)


def _short(frame: str) -> str:
    frame = re.sub(r":\d+\)$", ")", frame)
    return re.sub(r"\(.*?(cfbox_watch|box_sdk_gen|site-packages|python3\.\d+)/", "(", frame)


def summarize(raw_path: Path, hz: int = HZ, top: int = 10) -> tuple[str, dict]:
    """Fold py-spy's raw output (--idle --threads) into where the upload workers' wall
    time goes, plus the main thread's start-up share."""
    worker, main, leaf = Counter(), Counter(), Counter()
    threads: set[str] = set()
    for line in raw_path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not (stack and n.isdigit()):
            continue
        n = int(n)
        if re.search(WORKER_RX, stack):
            threads.add(stack.split(";", 1)[0])
            for name, rx in WORKER_CATEGORIES:
                if re.search(rx, stack):
                    worker[name] += n
                    break
            else:
                worker["other"] += n
                leaf[_short(stack.rsplit(";", 1)[-1])] += n
        elif "_find_and_load" in stack:
            main["start-up: imports"] += n
        elif "decrypt_private_key" in stack or "jwt" in stack.lower():
            main["start-up: key and sign-in"] += n
    wt = sum(worker.values()) or 1
    lines = [f"Worker threads: {len(threads)}, {wt / hz:.1f} thread-seconds sampled at {hz} Hz "
             "(wall time, waiting included):"]
    lines += [f"  {100 * v / wt:5.1f}%  {k}" for k, v in worker.most_common()]
    if leaf:
        lines += ["", "  'other' by innermost frame:"]
        lines += [f"  {100 * v / wt:5.1f}%  {k}" for k, v in leaf.most_common(top)]
    lines += ["", "Main thread: " + ", ".join(f"{k} {v / hz:.2f} s" for k, v in main.items())]
    data = {"hz": hz, "worker_threads": len(threads), "worker_seconds": round(wt / hz, 2),
            "worker_shares": {k: round(v / wt, 4) for k, v in worker.most_common()},
            "other_leaves": {k: round(v / wt, 4) for k, v in leaf.most_common(top)},
            "main_seconds": {k: round(v / hz, 2) for k, v in main.items()}}
    return "\n".join(lines), data


def _profile_once(bench, label: str, d: Path, cfg: Path, spy: str) -> str:
    raw = d / f"pyspy-{label}.txt"
    r = run_once(cfg, d / f"once-{label}.stderr",
                 wrap=[spy, "record", "-r", str(HZ), "--idle", "--threads", "-f", "raw", "-o", str(raw), "--"])
    if r.rc != 0:
        raise RuntimeError(f"profile {label}: cfbox-watch once exited {r.rc}:\n{r.stderr[-1500:]}")
    text, data = summarize(raw)
    bench.details.setdefault("profile", {})[label] = {**data, "wall_s": r.wall}
    return f"{label}: `cfbox-watch once` under py-spy, {r.wall:.1f} s wall\n" + text


def profile_runs(bench) -> str:
    """Profile the daemon on the four transfer workloads at this mode's sizes."""
    spy = find_pyspy()
    if spy is None:
        raise RuntimeError("--profile needs py-spy (pip install py-spy)")
    s = bench.s
    conn_extra = {"api_calls_per_minute": 100_000, "uploads_per_minute": 100_000}
    out: list[str] = []
    bench.log("profile: the daemon on small/big files out and in, under py-spy")
    emu = bench.emulator("profile")
    d = bench.scratch("profile")
    try:
        ctl = emu.control
        workload.make_tree(d / "small", s.small_files, s.small_size)
        workload.make_big(d / "big" / "clip.mp4", s.big_size)
        for label, src, workers in (("small files out, workers 4", d / "small", 4),
                                    ("big file out", d / "big", 1)):
            target = ctl.vendor_mkdir(emu.folders["upload"], f"profile-{len(out)}")["id"]
            cfg = workload.write_config(d / f"out{len(out)}.yaml", state_dir=d / f"state{len(out)}",
                                        connection=emu.connection(**conn_extra),
                                        delivery=[{"name": "p", "source": str(src), "folder_id": target,
                                                   "workers": workers, "settle_time": 0}])
            out.append(_profile_once(bench, label, d, cfg, spy))
        small_in = ctl.vendor_mkdir(emu.folders["download"], "small")["id"]
        payload = workload.jpeg_payload(s.in_size)
        for i in range(s.in_files):
            ctl.vendor_upload(small_in, f"img{i:06d}.jpg", workload.unique(payload, i))
        big_in = ctl.vendor_mkdir(emu.folders["download"], "big")["id"]
        ctl.vendor_upload(big_in, "clip.mp4", (d / "big" / "clip.mp4").read_bytes())
        shutil.rmtree(d / "small")
        shutil.rmtree(d / "big")
        for label, folder in (("files in, workers 4", small_in), ("big file in", big_in)):
            cfg = workload.write_config(d / f"in{len(out)}.yaml", state_dir=d / f"state{len(out)}",
                                        connection=emu.connection(**conn_extra),
                                        post_production=[{"name": "p", "download_folder_id": folder,
                                                          "incoming": str(d / f"in{len(out)}"), "workers": 4}])
            out.append(_profile_once(bench, label, d, cfg, spy))
        return "\n\n".join(out)
    finally:
        emu.stop()
        bench.drop(bench.work / "emu-profile", d)

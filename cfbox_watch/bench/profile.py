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
    ("upload: waiting for Box's answer", r"upload_file.*(readinto|getresponse|_read_status|recv)"),
    ("upload: sending the body", r"upload_file.*(send|MultipartStream|sendall)"),
    ("upload: SDK/adapter around the request", r"upload_file|upload_version"),
    ("rate limiter", r"ratelimit\.py"),
    ("state DB: waiting for the write lock (BEGIN IMMEDIATE)", r"transaction\.__enter__"),
    ("Box folder id lookup/creation (_folder_for)", r"_folder_for"),
    ("state DB: queries and commits", r"sqlite3|cfbox_watch/db\.py|/outgoing/state\.py|/incoming/state\.py"),
    ("SHA-1 hashing", r"hash_file|hashlib"),
    ("logging", r"logging/__init__|cfbox_watch/log\.py"),
    ("stat and image check", r"stat_file|image_problem|settle\.py"),
)
WORKER_RX = r"_drain_worker|_worker_loop"


def find_pyspy() -> str | None:
    """py-spy on PATH, or next to this interpreter (a venv that is not activated)."""
    here = Path(sys.executable).parent / "py-spy"
    return shutil.which("py-spy") or (str(here) if here.exists() else None)


def _short(frame: str) -> str:
    frame = re.sub(r":\d+\)$", ")", frame)
    return re.sub(r"\(.*?(cfbox_watch|box_sdk_gen|site-packages|python3\.\d+)/", "(", frame)


def summarize(raw_path: Path, hz: int, top: int = 10) -> tuple[str, dict]:
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
    lines = [f"Upload worker threads: {len(threads)}, {wt / hz:.1f} thread-seconds sampled at {hz} Hz "
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


def profile_small_out(bench, workers: int = 4) -> str:
    """Profile the daemon uploading the mode's small files with `workers` workers."""
    spy = find_pyspy()
    if spy is None:
        raise RuntimeError("--profile needs py-spy (pip install py-spy)")
    s = bench.s
    bench.log(f"profile: daemon small files out, {s.small_files} files, workers {workers}, under py-spy")
    emu = bench.emulator("profile")
    d = bench.scratch("profile")
    try:
        workload.make_tree(d / "out", s.small_files, s.small_size)
        target = emu.control.vendor_mkdir(emu.folders["upload"], "profile")["id"]
        cfg = workload.write_config(
            d / "cfbox.yaml", state_dir=d / "state",
            connection=emu.connection(api_calls_per_minute=100_000, uploads_per_minute=100_000),
            delivery=[{"name": "small", "source": str(d / "out"), "folder_id": target,
                       "workers": workers, "settle_time": 0}])
        raw = d / "pyspy.txt"
        r = run_once(cfg, d / "once.stderr", wrap=[spy, "record", "-r", str(HZ), "--idle", "--threads", "-f", "raw",
                                                    "-o", str(raw), "--"])
        if r.rc != 0:
            raise RuntimeError(f"profile run: cfbox-watch once exited {r.rc}:\n{r.stderr[-1500:]}")
        text, data = summarize(raw, HZ)
        keep = Path(bench.work).parent / "cfbox-bench-profile.txt"
        shutil.copy(raw, keep)
        bench.details["profile"] = {**data, "wall_s": r.wall, "raw_copy": str(keep)}
        return f"daemon `once`, {s.small_files} x {s.small_size // 1024} KB, workers {workers}, " \
               f"under py-spy: {r.wall:.1f} s\n\n" + text
    finally:
        emu.stop()
        bench.drop(bench.work / "emu-profile", d)

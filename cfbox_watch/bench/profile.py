"""Where the daemon's time goes in the small-files run: py-spy over `cfbox-watch once`.

py-spy samples every thread of the real subprocess from outside (no code change, no
tracing overhead inside the interpreter), so the profile is of the same run the
benchmark measures. The raw collapsed stacks are folded into plain categories and top
functions, which is what docs/benchmarks.md quotes. py-spy is a tool, not a dependency:
`pip install py-spy` (or the `bench` extra)."""

from __future__ import annotations

import re
import shutil
from collections import Counter
from pathlib import Path

from cfbox_watch.bench import workload
from cfbox_watch.bench.procs import run_once

# first matching rule wins; each is (category, regex over the whole stack)
CATEGORIES: tuple[tuple[str, str], ...] = (
    ("start-up: imports", r"_find_and_load|exec_module|<module>"),
    ("sign-in: JWT / RSA", r"cryptography|jwt|_CachedKey|retrieve_token|refresh_token"),
    ("SHA-1 hashing", r"hash_file|hashlib|_sha1|sha1_of"),
    ("SQLite (state DB)", r"sqlite3|cfbox_watch/db\.py|/outgoing/state\.py|/incoming/state\.py"),
    ("logging", r"logging/__init__|cfbox_watch/log\.py"),
    ("scan / stat / watch", r"scanner\.py|os\.scandir|stat_file|watchdog|inotify|settle\.py"),
    ("SDK request building / JSON", r"box_sdk_gen/(serialization|internal|schemas)|json/(de|en)coder"),
    ("HTTP (requests, sockets)", r"requests/|urllib3/|http/client|socket\.py|ssl\.py"),
    ("box_sdk_gen (other)", r"box_sdk_gen/"),
    ("rate limiter", r"ratelimit\.py"),
)


def _frames(stack: str) -> list[str]:
    return stack.split(";")


def summarize(raw_path: Path, top: int = 12) -> tuple[str, dict]:
    """Fold py-spy's raw (collapsed) output into categories, top self and cfbox_watch functions."""
    samples = Counter()
    for line in raw_path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if stack and n.isdigit():
            samples[stack] += int(n)
    total = sum(samples.values()) or 1
    cats, leaf, ours = Counter(), Counter(), Counter()
    for stack, n in samples.items():
        for name, rx in CATEGORIES:
            if re.search(rx, stack):
                cats[name] += n
                break
        else:
            cats["other"] += n
        frames = _frames(stack)
        leaf[re.sub(r":\d+\)$", ")", frames[-1])] += n
        seen = set()
        for f in frames:
            if "cfbox_watch/" in f and "/bench/" not in f:
                fn = re.sub(r":\d+\)$", ")", f)
                fn = re.sub(r"\(.*cfbox_watch/", "(", fn)
                if fn not in seen:
                    seen.add(fn)
                    ours[fn] += n
    lines = [f"py-spy samples (all threads, idle excluded): {total}", "", "By category:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in cats.most_common()]
    lines += ["", "Top self time (leaf function):"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in leaf.most_common(top)]
    lines += ["", "cfbox_watch functions, inclusive:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in ours.most_common(top)]
    data = {"samples": total, "categories": {k: round(v / total, 4) for k, v in cats.most_common()},
            "top_self": [(k, round(v / total, 4)) for k, v in leaf.most_common(top)],
            "cfbox_inclusive": [(k, round(v / total, 4)) for k, v in ours.most_common(top)]}
    return "\n".join(lines), data


def profile_small_out(bench, workers: int = 4) -> str:
    """Profile the daemon uploading the mode's small files with `workers` workers."""
    spy = shutil.which("py-spy")
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
        r = run_once(cfg, d / "once.stderr", wrap=[spy, "record", "-r", "250", "-f", "raw", "-o", str(raw), "--"])
        if r.rc != 0:
            raise RuntimeError(f"profile run: cfbox-watch once exited {r.rc}:\n{r.stderr[-1500:]}")
        text, data = summarize(raw)
        keep = Path(bench.work).parent / "cfbox-bench-profile.txt"
        shutil.copy(raw, keep)
        bench.details["profile"] = {**data, "wall_s": r.wall, "raw_copy": str(keep)}
        return f"daemon `once`, {s.small_files} x {s.small_size // 1024} KB, workers {workers}, " \
               f"under py-spy: {r.wall:.1f} s\n\n" + text
    finally:
        emu.stop()
        bench.drop(bench.work / "emu-profile", d)

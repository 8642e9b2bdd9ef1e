"""The measurements of issue 7, each next to its ceiling taken in the same run.

Every scenario gets its own emulator (so one run's stored blobs and counters never slow
or blur the next) and returns result rows (`Row`) plus a details dict for the JSON.
The daemon runs as a user runs it (`cfbox-watch -c FILE once|run` in a subprocess); only
the latency breakdown drives an OutgoingSide in-process, because its parts (settle wait,
hashing, transfer) are not visible from outside.
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cfbox_watch.bench import ceilings, workload
from cfbox_watch.bench.access import AccessWatch
from cfbox_watch.bench.procs import Daemon, Emulator, run_once, sample
from cfbox_watch.bench.sizes import MB, Sizes

UNLIMITED = 100_000    # the config's highest client-side rate limit: "no limiter" for ceilings
TOKEN_ROUTE = "POST /oauth2/token"


@dataclass
class Row:
    key: str
    group: str
    measure: str
    value: float | None
    unit: str
    ceiling: float | None = None
    ceiling_label: str = ""
    ratio: float | None = None      # value / ceiling (for "lower is better" units, ceiling / value)
    note: str = ""
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def ratio(value: float | None, ceiling: float | None, *, lower_is_better: bool = False) -> float | None:
    if not value or not ceiling:
        return None
    return round(ceiling / value if lower_is_better else value / ceiling, 3)


def api_calls(counters: dict) -> int:
    """Box calls a user is billed for: every counted request but sign-ins and the
    download host (dl.boxcloud.com on Box is not an API call)."""
    return sum(v for k, v in counters.items()
               if k != "total" and k != TOKEN_ROUTE and " /_dl/" not in k)


def job_seconds(stderr: str, action: str) -> float | None:
    """The engine's own time for its longest job (claim to done), from its one-line-per-file
    log (`ACTION=uploaded ... DURATION_MS=n`): a single big file's transfer without the
    start-up of `once`, which is too noisy to subtract when the transfer takes a second."""
    ms = [int(m.group(1)) for line in stderr.splitlines() if f"ACTION={action}" in line
          for m in [re.search(r"DURATION_MS=(\d+)", line)] if m]
    return max(ms) / 1000 if ms else None


def _check(result, what: str) -> None:
    if result.rc != 0:
        raise RuntimeError(f"{what}: cfbox-watch once exited {result.rc}:\n{result.stderr[-2000:]}")


def _cpu_of(pid: int) -> float:
    s = sample(pid)
    return s.cpu if s else 0.0


class Bench:
    """Shared state of one benchmark run: sizes, scratch folder, rows, details."""

    def __init__(self, sizes: Sizes, work: Path, log=print):
        self.s = sizes
        self.work = Path(work)
        self.rows: list[Row] = []
        self.details: dict = {}
        self.log = log
        self._startup_cpu: float | None = None

    def add(self, row: Row) -> None:
        self.rows.append(row)
        val = "-" if row.value is None else f"{row.value:g}"
        ceil = f" (ceiling {row.ceiling:g} {row.ceiling_label})" if row.ceiling is not None else ""
        self.log(f"  {row.measure}: {val} {row.unit}{ceil}")

    def emulator(self, name: str) -> Emulator:
        return Emulator(self.work / f"emu-{name}").start()

    def scratch(self, name: str) -> Path:
        p = self.work / name
        shutil.rmtree(p, ignore_errors=True)
        p.mkdir(parents=True)
        return p

    def drop(self, *paths: Path) -> None:
        for p in paths:
            shutil.rmtree(p, ignore_errors=True)

    def startup_cpu(self, emu: Emulator) -> float:
        """CPU seconds of a `once` with nothing to do: interpreter, imports, config, sign-in.
        Subtracted from per-file CPU so that a small run is not billed for start-up."""
        if self._startup_cpu is None:
            d = self.scratch("startup")
            (d / "out").mkdir()
            cfg = workload.write_config(d / "cfbox.yaml", state_dir=d / "state", connection=emu.connection(),
                                        delivery=[{"name": "empty", "source": str(d / "out"),
                                                   "folder_id": emu.folders["delivery"]}])
            runs = [run_once(cfg, d / f"once{i}.stderr") for i in range(2)]
            for r in runs:
                _check(r, "start-up baseline")
            self._startup_cpu = min(r.cpu for r in runs)
            self.details["startup"] = {"cpu_s": round(self._startup_cpu, 3),
                                       "wall_s": round(min(r.wall for r in runs), 3)}
            self.drop(d)
        return self._startup_cpu

    def net_wall(self, wall: float) -> float:
        """A `once` run's wall time minus the start-up every `once` pays (measured with an
        empty folder): a running daemon pays it once, not per batch."""
        return max(0.001, wall - self.details["startup"]["wall_s"])

    # ------------------------------------------------------------------ 1. small files out
    def small_files_out(self) -> None:
        s = self.s
        self.log(f"1. small files out: {s.small_files} x {s.small_size // 1024} KB, workers {s.small_workers}")
        src = self.scratch("small-src")
        workload.make_tree(src, s.small_files, s.small_size)
        files = sorted(src.rglob("*.jpg"))
        det = self.details.setdefault("small_out", {})
        for w in s.small_workers:
            emu = self.emulator(f"small-w{w}")
            try:
                ctl = emu.control
                base_cpu = self.startup_cpu(emu)
                sdk_folder = ctl.vendor_mkdir(emu.folders["upload"], f"sdk-w{w}")["id"]
                client = ceilings.sdk_client(emu.config_path, emu.base_url, emu.upload_url)
                emu_cpu0 = _cpu_of(emu.pid)
                ctl.reset_counters()
                sdk = ceilings.sdk_upload_loop(client, sdk_folder, files, w)
                sdk_counters = ctl.counters()
                sdk["emulator_cpu"] = _cpu_of(emu.pid) - emu_cpu0

                d = self.scratch(f"small-w{w}")
                target = ctl.vendor_mkdir(emu.folders["upload"], f"daemon-w{w}")["id"]
                cfg = workload.write_config(
                    d / "cfbox.yaml", state_dir=d / "state",
                    connection=emu.connection(api_calls_per_minute=UNLIMITED, uploads_per_minute=UNLIMITED),
                    delivery=[{"name": "small", "source": str(src), "folder_id": target,
                               "workers": w, "settle_time": 0}])
                emu_cpu0 = _cpu_of(emu.pid)
                ctl.reset_counters()
                r = run_once(cfg, d / "once.stderr")
                _check(r, f"small files out, workers {w}")
                counters = ctl.counters()
                emu_cpu = _cpu_of(emu.pid) - emu_cpu0
                landed = ctl.item_count(target)
            finally:
                emu.stop()
                self.drop(self.work / f"emu-small-w{w}")
            n = len(files)
            folders = len({p.parent for p in files})
            if landed != n + folders:
                raise RuntimeError(f"small files out, workers {w}: Box holds {landed} items, expected {n + folders}")
            base_wall = self.details["startup"]["wall_s"]
            fps, sdk_fps = n / self.net_wall(r.wall), n / sdk["wall"]
            cpu_file = (r.cpu - base_cpu) / n
            self.add(Row(f"small_out_w{w}", "1", f"Small files out, workers {w}", round(fps, 1), "files/s",
                         round(sdk_fps, 1), f"bare SDK upload loop, {w} threads", ratio(fps, sdk_fps),
                         note=f"`once` wall {r.wall:.2f} s minus its {base_wall:.2f} s start-up; "
                              f"with start-up {n / r.wall:.1f} files/s",
                         extra={"wall_s": round(r.wall, 2), "sdk_wall_s": round(sdk["wall"], 2)}))
            self.add(Row(f"small_out_cpu_w{w}", "1", f"CPU per small file out, workers {w}",
                         round(cpu_file * 1000, 2), "ms/file", round(sdk["cpu"] / n * 1000, 2),
                         "bare SDK loop", ratio(cpu_file, sdk["cpu"] / n, lower_is_better=True),
                         note=f"daemon CPU minus its {base_cpu:.2f} s start-up"))
            det[f"workers_{w}"] = {
                "daemon": {"wall_s": r.wall, "cpu_s": r.cpu, "max_rss_kb": r.max_rss_kb,
                           "emulator_cpu_s": emu_cpu, "counters": counters, "api_calls": api_calls(counters)},
                "sdk": {**sdk, "counters": sdk_counters}}
        self.details["small_out"]["files"] = len(files)
        self.drop(src)

    # ------------------------------------------------------------------ 2. big file out
    def big_file_out(self) -> None:
        s = self.s
        mib = s.big_size / MB
        self.log(f"2. big file out: {mib:.0f} MiB")
        d = self.scratch("big-out")
        src = d / "out"
        big = src / "clip.mp4"
        workload.make_big(big, s.big_size)
        local = ceilings.read_and_sha1(big)
        emu = self.emulator("big-out")
        try:
            ctl = emu.control
            client = ceilings.sdk_client(emu.config_path, emu.base_url, emu.upload_url)
            sdk_folder = ctl.vendor_mkdir(emu.folders["upload"], "sdk")["id"]
            sdk = ceilings.sdk_big_upload(client, sdk_folder, big)
            self.startup_cpu(emu)
            target = ctl.vendor_mkdir(emu.folders["upload"], "daemon")["id"]
            cfg = workload.write_config(
                d / "cfbox.yaml", state_dir=d / "state",
                connection=emu.connection(api_calls_per_minute=UNLIMITED, uploads_per_minute=UNLIMITED),
                delivery=[{"name": "big", "source": str(src), "folder_id": target, "settle_time": 0}])
            ctl.reset_counters()
            r = run_once(cfg, d / "once.stderr")
            _check(r, "big file out")
            counters = ctl.counters()
            node = ctl.find(target, "clip.mp4")
        finally:
            emu.stop()
            self.drop(self.work / "emu-big-out")
        if not node or node.get("sha1") != local["sha1"]:
            raise RuntimeError(f"big file out: Box holds {node!r}, expected SHA-1 {local['sha1']}")
        job = job_seconds(r.stderr, "uploaded") or self.net_wall(r.wall)
        mbps = mib / job
        local_mbps, sdk_mbps = mib / local["wall"], mib / sdk["wall"]
        self.add(Row("big_out", "2", f"Big file out ({mib:.0f} MiB, chunked, parallel parts)", round(mbps, 1),
                     "MiB/s", round(sdk_mbps, 1), "bare SDK upload_big_file (sequential)",
                     ratio(mbps, sdk_mbps), note=f"the engine's job time {job:.2f} s (its log line); `once` "
                                                 f"wall {r.wall:.2f} s, {mib / r.wall:.1f} MiB/s with start-up",
                     extra={"wall_s": round(r.wall, 2), "job_s": round(job, 3)}))
        self.add(Row("big_out_local", "2", "Big file out vs. local read + SHA-1", round(mbps, 1), "MiB/s",
                     round(local_mbps, 1), "read + SHA-1 of the same file", ratio(mbps, local_mbps)))
        self.details["big_out"] = {"bytes": s.big_size, "daemon": {"wall_s": r.wall, "cpu_s": r.cpu,
                                                                   "max_rss_kb": r.max_rss_kb,
                                                                   "counters": counters},
                                   "sdk": sdk, "local_read_sha1": local}
        self.drop(d)

    # ------------------------------------------------------------------ 3. latency
    def latency(self) -> None:
        from cfbox_watch.bench.latency import measure_latency

        s = self.s
        self.log(f"3. latency: {s.latency_files} single files, settle_time {s.settle_time:g} s")
        emu = self.emulator("latency")
        d = self.scratch("latency")
        try:
            res = measure_latency(emu, d, files=s.latency_files, gap=s.latency_gap, settle_time=s.settle_time,
                                  size=s.small_size)
        finally:
            emu.stop()
            self.drop(self.work / "emu-latency", d)
        goal = s.settle_time + 1.0
        self.add(Row("latency_p50", "3", "Latency close -> committed on Box, p50", round(res["p50"], 3), "s",
                     goal, "goal: settle time + 1 s", ratio(res["p50"], goal, lower_is_better=True),
                     note=f"settle_time {s.settle_time:g} s"))
        self.add(Row("latency_p95", "3", "Latency close -> committed on Box, p95", round(res["p95"], 3), "s",
                     goal, "goal: settle time + 1 s", ratio(res["p95"], goal, lower_is_better=True)))
        self.add(Row("latency_over_settle_p50", "3", "Latency beyond the settle time, p50",
                     round(res["p50"] - s.settle_time, 3), "s", 1.0, "goal: well under 1 s",
                     note="parts (p50): wait {wait_p50:.3f} s (settle + detection), hash {hash_p50:.4f} s, "
                          "transfer {transfer_p50:.3f} s, other {other_p50:.3f} s".format(**res)))
        self.details["latency"] = res

    # ------------------------------------------------------------------ 4. files in
    def files_in(self) -> None:
        s = self.s
        self.log(f"4. files in: {s.in_files} x {s.in_size // 1024} KB, and one {s.big_size / MB:.0f} MiB file")
        emu = self.emulator("files-in")
        d = self.scratch("files-in")
        try:
            ctl = emu.control
            dl = emu.folders["download"]
            small_root = ctl.vendor_mkdir(dl, "small")["id"]
            subs: dict[int, str] = {}
            payload = workload.jpeg_payload(s.in_size)
            ids = []
            for i in range(s.in_files):
                k = i // workload.PER_FOLDER
                if k not in subs:
                    subs[k] = ctl.vendor_mkdir(small_root, f"shoot{k:04d}")["id"]
                ids.append(ctl.vendor_upload(subs[k], f"img{i:06d}.jpg", workload.unique(payload, i))["id"])
            client = ceilings.sdk_client(emu.config_path, emu.base_url, emu.upload_url)
            sdk = ceilings.http_download_loop(client, emu.base_url, ids, 4)
            sdk_own = ceilings.sdk_download_loop(client, ids, 4)
            cfg = workload.write_config(
                d / "cfbox.yaml", state_dir=d / "state",
                connection=emu.connection(api_calls_per_minute=UNLIMITED, uploads_per_minute=UNLIMITED),
                post_production=[{"name": "vendor", "download_folder_id": small_root,
                                  "incoming": str(d / "in"), "workers": 4}])
            self.startup_cpu(emu)
            ctl.reset_counters()
            r = run_once(cfg, d / "once.stderr")
            _check(r, "files in")
            counters = ctl.counters()
            got = sum(1 for _ in (d / "in").rglob("*.jpg"))
            if got != s.in_files:
                raise RuntimeError(f"files in: {got} files arrived, expected {s.in_files}")

            big_folder = ctl.vendor_mkdir(dl, "big")["id"]
            big = self.work / "big-in.mp4"
            workload.make_big(big, s.big_size)
            big_id = ctl.vendor_upload(big_folder, "clip.mp4", big.read_bytes())["id"]
            big.unlink()
            sdk_big = ceilings.http_download_loop(client, emu.base_url, [big_id], 1)
            local_big = ceilings.write_sha1_fsync(d / "ceiling.bin", s.big_size)
            sdk_big_own = ceilings.sdk_download_loop(client, [big_id], 1)
            cfg2 = workload.write_config(
                d / "cfbox-big.yaml", state_dir=d / "state-big",
                connection=emu.connection(api_calls_per_minute=UNLIMITED, uploads_per_minute=UNLIMITED),
                post_production=[{"name": "vendor-big", "download_folder_id": big_folder,
                                  "incoming": str(d / "in-big")}])
            rb = run_once(cfg2, d / "once-big.stderr")
            _check(rb, "big file in")
            if (d / "in-big" / "clip.mp4").stat().st_size != s.big_size:
                raise RuntimeError("big file in: the local copy has the wrong size")
        finally:
            emu.stop()
            self.drop(self.work / "emu-files-in")
        n = s.in_files
        fps, sdk_fps = n / self.net_wall(r.wall), n / sdk["wall"]
        mib = s.big_size / MB
        big_job = job_seconds(rb.stderr, "downloaded") or self.net_wall(rb.wall)
        big_mbps = mib / big_job
        self.add(Row("files_in", "4", f"Files in ({n} x {s.in_size // 1024} KB, workers 4)", round(fps, 1),
                     "files/s", round(sdk_fps, 1), "plain HTTP GETs, 4 threads, to memory",
                     ratio(fps, sdk_fps), note="daemon: listing, download, SHA-1 check, fsync, rename; `once` wall "
                     f"{r.wall:.2f} s minus start-up; the SDK's own download_file loop: "
                     f"{n / sdk_own['wall']:.1f} files/s",
                     extra={"wall_s": round(r.wall, 2), "mib_per_s": round(n * s.in_size / MB / r.wall, 1)}))
        self.add(Row("big_in", "4", f"Big file in ({mib:.0f} MiB)", round(big_mbps, 1), "MiB/s",
                     round(mib / sdk_big["wall"], 1), "plain HTTP GET to memory, 1 MiB reads",
                     ratio(big_mbps, mib / sdk_big["wall"]),
                     note=f"the engine's job time {big_job:.2f} s (its log line; `once` wall {rb.wall:.2f} s); "
                          f"the SDK's own download_file stream (1 KB reads): {mib / sdk_big_own['wall']:.1f} MiB/s",
                     extra={"wall_s": round(rb.wall, 2)}))
        self.add(Row("big_in_local", "4", "Big file in vs. local write + SHA-1 + fsync", round(big_mbps, 1),
                     "MiB/s", round(mib / local_big["wall"], 1), "write + SHA-1 + fsync of as many bytes",
                     ratio(big_mbps, mib / local_big["wall"])))
        self.details["files_in"] = {"daemon": {"wall_s": r.wall, "cpu_s": r.cpu, "counters": counters,
                                               "api_calls": api_calls(counters)},
                                    "http": sdk, "sdk_download_file": sdk_own,
                                    "big": {"wall_s": rb.wall, "cpu_s": rb.cpu, "max_rss_kb": rb.max_rss_kb,
                                            "http": sdk_big, "sdk_download_file": sdk_big_own,
                                            "local_write_sha1_fsync": local_big}}
        self.drop(d)

    # ------------------------------------------------------------------ 5 + 6. idle and restart
    def _tracked(self, name: str, n_files: int, size: int):
        """An emulator plus a tree of n_files already uploaded by `once`; returns
        (emu, dir, config path, seeding result)."""
        emu = self.emulator(name)
        try:
            d = self.scratch(name)
            src = d / "out"
            workload.make_tree(src, n_files, size)
            (d / "in").mkdir()
            cfg = workload.write_config(
                d / "cfbox.yaml", state_dir=d / "state", connection=emu.connection(
                    api_calls_per_minute=UNLIMITED, uploads_per_minute=UNLIMITED),
                post_production=[{"name": "studio", "outgoing": str(src),
                                  "upload_folder_id": emu.folders["upload"],
                                  "download_folder_id": emu.folders["download"], "incoming": str(d / "in"),
                                  "poll_interval": self.s.idle_poll_interval, "workers": 8}])
            t0 = time.monotonic()
            seed = run_once(cfg, d / "seed.stderr", timeout=4 * 3600)
            _check(seed, f"seeding {n_files} files")
            self.details.setdefault("seeding", {})[name] = {"files": n_files, "wall_s": round(time.monotonic() - t0, 1)}
        except BaseException:
            emu.stop()
            raise
        return emu, d, cfg, seed

    def _start_and_settle(self, emu: Emulator, d: Path, cfg: Path, tag: str) -> dict:
        ctl = emu.control
        ctl.reset_counters()
        watch = AccessWatch(d / "out")
        daemon = Daemon(cfg, d, tag).start()
        try:
            first = daemon.sample()
            ready = daemon.wait_ready(timeout=1800)
            idle = daemon.wait_idle(timeout=1800)
            at_idle = daemon.sample()
            counters = ctl.counters()
        except BaseException:
            daemon.stop()
            raise
        finally:
            access = watch.stop()
        return {"daemon": daemon, "ready_s": ready, "idle_s": idle, "rchar": at_idle.rchar - (first.rchar if first else 0),
                "cpu_s": at_idle.cpu, "rss_kb": at_idle.rss_kb, "counters": counters, **access}

    def restart_and_idle(self) -> None:
        s = self.s
        self.log(f"5/6. restart with {s.restart_files} unchanged files; idle {s.idle_seconds:g} s with "
                 f"{s.idle_files} tracked files")
        # baseline: the same daemon over an empty folder (what start-up costs with nothing tracked)
        emu, d, cfg, _ = self._tracked("restart-empty", 0, s.restart_size)
        try:
            base = self._start_and_settle(emu, d, cfg, "empty")
            base["daemon"].stop()
        finally:
            emu.stop()
            self.drop(self.work / "emu-restart-empty", d)
        shared = s.idle_files == s.restart_files and s.idle_files > 0
        emu, d, cfg, seed = self._tracked("restart", s.restart_files, s.restart_size)
        res = None
        try:
            res = self._start_and_settle(emu, d, cfg, "restart")
            tree_bytes = s.restart_files * s.restart_size
            extra_read = max(0, res["rchar"] - base["rchar"])
            calls = api_calls(res["counters"])
            uploads = sum(v for k, v in res["counters"].items() if "/api/2.0/files" in k)
            self.add(Row("restart_ready", "6", f"Restart, {s.restart_files} unchanged files: time to READY",
                         round(res["ready_s"], 2), "s", round(base["ready_s"], 2), "same daemon, empty folder",
                         ratio(res["ready_s"], base["ready_s"], lower_is_better=True)))
            self.add(Row("restart_idle", "6", "Restart: time to idle", round(res["idle_s"], 2), "s",
                         round(base["idle_s"], 2), "same daemon, empty folder",
                         ratio(res["idle_s"], base["idle_s"], lower_is_better=True)))
            self.add(Row("restart_files_read", "6", "Restart: tracked files read again", res["files_read"], "files",
                         0.0, "goal: none hashed",
                         note=f"inotify IN_ACCESS on the tree ({res['files_opened']} opened); the daemon read "
                              f"{extra_read / MB:.1f} MiB more than an empty start (rchar: files and state DB), "
                              f"the tree holds {tree_bytes / MB:.1f} MiB"))
            self.add(Row("restart_calls", "6", "Restart: Box calls until idle", calls, "calls",
                         api_calls(base["counters"]), "same daemon, empty folder",
                         note=f"uploads: {uploads}; " + ", ".join(
                             f"{k} {v}" for k, v in sorted(res["counters"].items()) if k != "total")))
            self.details["restart"] = {"files": s.restart_files, "seed_wall_s": seed.wall, "seed_cpu_s": seed.cpu,
                                       "ready_s": res["ready_s"], "idle_s": res["idle_s"], "rchar": res["rchar"],
                                       "files_read": res["files_read"], "files_opened": res["files_opened"],
                                       "counters": res["counters"], "cpu_s": res["cpu_s"],
                                       "empty": {k: v for k, v in base.items() if k != "daemon"}}
            if shared:
                self._idle(emu, res["daemon"], s.idle_files)
        finally:
            if res is not None:
                res["daemon"].stop()
            emu.stop()
            self.drop(self.work / "emu-restart", d)
        if not shared:
            emu, d, cfg, _ = self._tracked("idle", s.idle_files, s.restart_size)
            res = None
            try:
                res = self._start_and_settle(emu, d, cfg, "idle")
                self._idle(emu, res["daemon"], s.idle_files)
            finally:
                if res is not None:
                    res["daemon"].stop()
                emu.stop()
                self.drop(self.work / "emu-idle", d)

    def _idle(self, emu: Emulator, daemon: Daemon, n_files: int) -> None:
        s = self.s
        ctl = emu.control
        ctl.reset_counters()
        a = daemon.sample()
        rss_max = a.rss_kb
        t_end = time.monotonic() + s.idle_seconds
        while time.monotonic() < t_end:
            time.sleep(min(1.0, max(0.0, t_end - time.monotonic())))
            x = daemon.sample()
            rss_max = max(rss_max, x.rss_kb)
        b = daemon.sample()
        counters = ctl.counters()
        span = b.t - a.t
        cpu_pct = 100 * (b.cpu - a.cpu) / span
        calls = api_calls(counters)
        self.add(Row("idle_cpu", "5", f"Idle, {n_files} tracked files: CPU", round(cpu_pct, 2), "% of a core",
                     note=f"over {span:.0f} s"))
        self.add(Row("idle_rss", "5", "Idle: RSS", round(rss_max / 1024, 1), "MiB"))
        self.add(Row("idle_calls", "5", f"Idle: Box calls in {span:.0f} s", calls, "calls",
                     note=", ".join(f"{k} {v}" for k, v in sorted(counters.items()) if k != "total")))
        listings = counters.get("GET /2.0/folders/{id}/items", 0)
        intervals = span / s.idle_poll_interval
        self.add(Row("api_idle_interval", "7", f"Box calls per idle poll interval ({s.idle_poll_interval:g} s)",
                     round(calls / intervals, 2), "calls", note=f"{listings / intervals:.2f} listings per interval "
                     "(ceiling 1: one listing of the Download folder); the rest is the event long-poll "
                     "(OPTIONS /events, GET /events, the realtime subscribe), one cycle per reconnect"))
        self.add(Row("api_idle_listings", "7", "Folder listings per idle poll interval", round(listings / intervals, 2),
                     "calls", 1.0, "one listing of the Download folder",
                     ratio(listings / intervals, 1.0, lower_is_better=True)))
        self.details["idle"] = {"files": n_files, "seconds": span, "cpu_pct": cpu_pct, "rss_max_kb": rss_max,
                                "counters": counters}

    # ------------------------------------------------------------------ 7. API economy
    def api_economy(self) -> None:
        """Derived from the runs above: calls per uploaded and per downloaded file."""
        so = self.details.get("small_out", {})
        key = next((k for k in ("workers_4", "workers_8", "workers_1", "workers_2") if k in so), None)
        if key:
            n = so["files"]
            c = so[key]["daemon"]["counters"]
            self.add(Row("api_per_upload", "7", "Box calls per uploaded small file", round(api_calls(c) / n, 3),
                         "calls", 1.0, "one direct upload", ratio(api_calls(c) / n, 1.0, lower_is_better=True),
                         note=", ".join(f"{k} {v}" for k, v in sorted(c.items()) if k != "total")))
        fi = self.details.get("files_in")
        if fi:
            n = self.s.in_files
            c = fi["daemon"]["counters"]
            self.add(Row("api_per_download", "7", "Box calls per downloaded file", round(api_calls(c) / n, 3),
                         "calls", 1.0, "one GET content (the dl host is not counted)",
                         ratio(api_calls(c) / n, 1.0, lower_is_better=True),
                         note=", ".join(f"{k} {v}" for k, v in sorted(c.items()) if k != "total")))

    # ------------------------------------------------------------------ 8. Box's real limits
    def rate_limits(self) -> None:
        s = self.s
        if s.rate_files <= 0:
            return
        self.log(f"8. Box's limits: {s.rate_files} uploads with the emulator enforcing "
                 f"{s.rate_api_per_minute} calls/min and {s.rate_uploads_per_minute} uploads/min")
        emu = self.emulator("rate")
        d = self.scratch("rate")
        try:
            ctl = emu.control
            ctl.rate_limits(api_per_minute=s.rate_api_per_minute, uploads_per_minute=s.rate_uploads_per_minute)
            workload.make_tree(d / "out", s.rate_files, 16 * 1024)
            cfg = workload.write_config(   # the connection's default client-side limits
                d / "cfbox.yaml", state_dir=d / "state", connection=emu.connection(),
                delivery=[{"name": "rate", "source": str(d / "out"), "folder_id": emu.folders["delivery"],
                           "settle_time": 0, "workers": 8}])
            ctl.reset_counters()
            series: list[tuple[float, int]] = []
            stop = threading.Event()

            def watch() -> None:
                while not stop.wait(1.0):
                    c = ctl.counters()
                    series.append((time.monotonic(), c.get("POST /api/2.0/files/content", 0)))

            t = threading.Thread(target=watch, daemon=True)
            t.start()
            try:
                r = run_once(cfg, d / "once.stderr", timeout=3600)
            finally:
                stop.set()
                t.join()
            _check(r, "rate-limited uploads")
            counters = ctl.counters()
        finally:
            emu.stop()
            self.drop(self.work / "emu-rate")
        got_429 = len(re.findall(r"\(429\)", r.stderr))
        best = 0
        for i, (ti, ci) in enumerate(series):
            for tj, cj in series[i:]:
                if tj - ti <= 60.5:
                    best = max(best, cj - ci)
        per_min = s.rate_files / r.wall * 60
        window = "best 60 s window" if series and series[-1][0] - series[0][0] >= 59 else "whole run (< 60 s)"
        sustained = best if window.startswith("best") else per_min
        self.add(Row("rate_uploads", "8", "Sustained uploads/min under Box's limits", round(sustained, 1), "uploads/min",
                     float(s.rate_uploads_per_minute), "Box: 240 uploads/min per user",
                     ratio(sustained, s.rate_uploads_per_minute),
                     note=f"{window}; whole run {per_min:.0f}/min; client limit 200/min (default)"))
        self.add(Row("rate_429", "8", "429s received", got_429, "responses", 0.0, "goal: almost none"))
        self.details["rate"] = {"files": s.rate_files, "wall_s": r.wall, "series": series, "counters": counters,
                                "429": got_429}
        self.drop(d)


ALL = ("small_out", "big_out", "latency", "files_in", "restart_idle", "api", "rate")


def run(bench: Bench, only: tuple[str, ...] = ALL) -> None:
    steps = {"small_out": bench.small_files_out, "big_out": bench.big_file_out, "latency": bench.latency,
             "files_in": bench.files_in, "restart_idle": bench.restart_and_idle, "api": bench.api_economy,
             "rate": bench.rate_limits}
    for name in ALL:
        if name in only:
            t0 = time.monotonic()
            steps[name]()
            bench.details.setdefault("step_seconds", {})[name] = round(time.monotonic() - t0, 1)




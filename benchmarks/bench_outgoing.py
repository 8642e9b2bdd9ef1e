"""Outgoing throughput against the local emulator: files/s for many small files and
MB/s for one large (chunked) file.  Prints the figures; not a test.

    .venv/bin/python benchmarks/bench_outgoing.py [--files 1000] [--big-mb 200]

The client-side rate limiter normally keeps a connection under Box's ~240 uploads a
minute, which alone caps small files at ~3.3 files/s against real Box; the emulator has
no such limit, so the limiter is raised here to measure what the engine itself does
(pass --box-limits to measure with the production limits instead).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from cfbox_watch.bench.procs import Emulator  # noqa: E402
from cfbox_watch.box_adapter import BoxRemote
from cfbox_watch.config_model import Config, Connection, OutgoingMapping
from cfbox_watch.emulator.control import EmulatorControl
from cfbox_watch.outgoing.engine import OutgoingSide


def start_emulator(work: Path):
    """The benchmark harness's own starter (cfbox_watch/bench/procs.py): free port,
    ready line, and the emulator dies with this script."""
    emu = Emulator(work).start()
    emu.ready["config_path"] = str(emu.config_path)
    return emu.proc, emu.ready


def side_for(ready: dict, root: Path, state: Path, name: str, box_limits: bool, **kw) -> OutgoingSide:
    limits = {} if box_limits else {"api_calls_per_minute": 10 ** 6, "uploads_per_minute": 10 ** 6}
    conn = Connection(name="emu", jwt_config=Path(ready["config_path"]), base_url=ready["base_url"],
                      upload_url=ready["upload_url"], **limits)
    m = OutgoingMapping(name=name, kind="delivery", connection="emu", local=root,
                        folder_id=ready["folders"]["delivery"], key_path="delivery[0]",
                        settle_time=0.0, **kw)
    cfg = Config(path=state / "cfbox.yaml", state_dir=state, connections={"emu": conn}, outgoing=(m,))
    return OutgoingSide(cfg, m, BoxRemote.from_connection(conn))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--file-size", type=int, default=8192)
    ap.add_argument("--big-mb", type=int, default=200)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--part-workers", type=int, default=3)
    ap.add_argument("--box-limits", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cfbox-bench-") as tmp:
        work = Path(tmp)
        proc, ready = start_emulator(work)
        try:
            ctl = EmulatorControl(ready["base_url"])
            small = work / "small"
            for i in range(args.files):
                p = small / f"shoot{i % 10:02d}" / f"IMG_{i:05d}.raw"
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(os.urandom(args.file_size))
            side = side_for(ready, small, work / "state", "small", args.box_limits, workers=args.workers)
            t0 = time.monotonic()
            ok = side.run_once()
            dt = time.monotonic() - t0
            n = len(ctl.files(ready["folders"]["delivery"]))
            print(f"small files: {n}/{args.files} x {args.file_size} B, workers={args.workers}: "
                  f"{dt:.1f} s, {args.files / dt:.0f} files/s (ok={ok})")
            t0 = time.monotonic()
            side.run_once()
            print(f"second pass over {args.files} unchanged files: {time.monotonic() - t0:.2f} s, "
                  f"{side.remote.calls()} Box calls in total so far")

            big = work / "big"
            big.mkdir()
            with open(big / "big.tif.bin", "wb") as f:
                for _ in range(args.big_mb):
                    f.write(os.urandom(1 << 20))
            side = side_for(ready, big, work / "state", "big", args.box_limits,
                            part_workers=args.part_workers)
            ctl.reset_counters()
            t0 = time.monotonic()
            ok = side.run_once()
            dt = time.monotonic() - t0
            parts = sum(v for k, v in ctl.counters().items() if k.startswith("PUT /api/2.0/files/upload_sessions"))
            print(f"one {args.big_mb} MB file (chunked, {parts} parts, part_workers={args.part_workers}): "
                  f"{dt:.1f} s, {args.big_mb / dt:.1f} MB/s incl. hashing (ok={ok})")
        finally:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()

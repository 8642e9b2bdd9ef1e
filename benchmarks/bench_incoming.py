"""Figures for the incoming side against the local emulator (not a test; prints numbers).

    .venv/bin/python benchmarks/bench_incoming.py [--files 1000] [--file-kb 20] [--big-mb 64]

Measures: files/s for many small files, MB/s for one large file (both through the real
box_sdk_gen client, SHA-1 verified, fsynced), API calls for one idle `once` pass and per
idle poll interval of the running side, and the delay from a vendor upload to the local
file with the event long-poll.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cfbox_watch.bench.procs import Emulator  # noqa: E402
from cfbox_watch.box_adapter import BoxRemote  # noqa: E402
from cfbox_watch.config_model import Config, Connection, IncomingMapping  # noqa: E402
from cfbox_watch.emulator.control import EmulatorControl  # noqa: E402
from cfbox_watch.incoming.engine import IncomingSide  # noqa: E402


def start_emulator(work: Path):
    """The benchmark harness's own starter (cfbox_watch/bench/procs.py): free port,
    ready line, and the emulator dies with this script."""
    emu = Emulator(work).start()
    return emu.proc, emu.ready


def side_for(work: Path, ready: dict, name: str, *, api_per_minute: int = 900, **kw) -> IncomingSide:
    conn = Connection("emu", work / "config.json", ready["base_url"], ready["upload_url"],
                      api_calls_per_minute=api_per_minute)
    opts = dict(name=name, connection="emu", folder_id=ready["folders"]["download"],
                local=work / name, key_path="post_production[0]", long_poll=False)
    opts.update(kw)
    m = IncomingMapping(**opts)
    cfg = Config(path=work / "cfbox.yaml", state_dir=work / "state", connections={"emu": conn}, incoming=(m,))
    return IncomingSide(cfg, m, BoxRemote.from_connection(conn))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--file-kb", type=int, default=20)
    ap.add_argument("--big-mb", type=int, default=64)
    ap.add_argument("--folders", type=int, default=10)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cfbox-bench-in-"))
    proc, ready = start_emulator(work)
    ctl = EmulatorControl(ready["base_url"])
    dl = ready["folders"]["download"]
    try:
        subs = [ctl.vendor_mkdir(dl, f"shoot{i:02d}")["id"] for i in range(args.folders)]
        payload = os.urandom(args.file_kb * 1024)
        for i in range(args.files):
            ctl.vendor_upload(subs[i % len(subs)], f"img{i:05d}.jpg", payload[:-8] + i.to_bytes(8, "big"))

        mb = args.files * args.file_kb / 1024
        for label, limit in (("client rate limiter off", 10 ** 7), ("default limiter, 900 calls/min", 900)):
            name = "small" if limit == 900 else "small-unlimited"
            side = side_for(work, ready, name, api_per_minute=limit)
            t0 = time.monotonic()
            ok = side.run_once()
            dt = time.monotonic() - t0
            print(f"small files ({label}): {args.files} x {args.file_kb} KB in {args.folders} folders: "
                  f"{dt:.2f} s, {args.files / dt:.0f} files/s, {mb / dt:.1f} MB/s "
                  f"(ok={ok}, workers={side.m.workers})")

        ctl.reset_counters()
        calls0 = side.remote.calls()
        t0 = time.monotonic()
        side.run_once()
        dt = time.monotonic() - t0
        c = ctl.counters()
        print(f"idle once pass over {args.files} files / {args.folders + 1} folders: "
              f"{side.remote.calls() - calls0} API calls ({c.get('GET /2.0/folders/{id}/items', 0)} listings, "
              f"{c.get('GET /2.0/files/{id}/content', 0)} downloads), {dt * 1000:.0f} ms")

        big_root = ready["folders"]["download"]
        big_folder = ctl.vendor_mkdir(big_root, "big")["id"]
        block = os.urandom(1 << 20)
        big = b"".join(block[:-4] + i.to_bytes(4, "big") for i in range(args.big_mb))
        ctl.vendor_upload(big_folder, "big.psb", big)
        del big
        side = side_for(work, ready, "large", folder_id=big_folder)
        shutil.rmtree(work / "small-unlimited", ignore_errors=True)
        t0 = time.monotonic()
        ok = side.run_once()
        dt = time.monotonic() - t0
        print(f"large file: {args.big_mb} MB in {dt:.2f} s, {args.big_mb / dt:.1f} MB/s "
              f"(listing + download + SHA-1 + fsync; ok={ok})")

        # running side: API calls per idle poll interval, and event latency
        side = side_for(work, ready, "small", long_poll=True, poll_interval=5.0)
        ctl.settings(longpoll_hold=30)
        side.start()
        time.sleep(3)
        ctl.reset_counters()
        calls0 = side.remote.calls()
        time.sleep(20)
        c = ctl.counters()
        n = side.remote.calls() - calls0
        print(f"running, idle, poll_interval 5 s, long-poll on: {n} calls in 20 s = {n / 4:.1f} per interval "
              f"({c.get('GET /2.0/folders/{id}/items', 0)} listings, {c.get('GET /2.0/events', 0)} event reads)")
        lat = []
        for i in range(5):
            t0 = time.monotonic()
            ctl.vendor_upload(dl, f"late{i}.jpg", os.urandom(50_000))
            target = work / "small" / f"late{i}.jpg"
            while not target.exists() and time.monotonic() - t0 < 30:
                time.sleep(0.01)
            lat.append(time.monotonic() - t0)
            time.sleep(0.5)
        print(f"vendor upload -> local file (long-poll): median {sorted(lat)[2] * 1000:.0f} ms, "
              f"max {max(lat) * 1000:.0f} ms")
        side.request_stop()
        side.join(5)
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

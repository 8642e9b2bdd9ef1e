"""Webhook figures against the local emulator (not a test; prints numbers).

    .venv/bin/python benchmarks/bench_webhooks.py [--files 20] [--verify 20000]

Measures: the delay from a vendor upload to the verified local file through a webhook
(a `cfbox-watch run` subprocess with poll_interval 1h and long-poll off, so nothing else
can explain the speed), as median / p90 / max; and signature verifications per second
(the pure check every delivery passes).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml  # noqa: E402

from cfbox_watch.bench.procs import Emulator  # noqa: E402
from cfbox_watch.emulator.control import EmulatorControl  # noqa: E402
from cfbox_watch.webhooks import signature  # noqa: E402


def start_emulator(work: Path):
    """The benchmark harness's own starter (cfbox_watch/bench/procs.py): free port,
    ready line, and the emulator dies with this script."""
    emu = Emulator(work).start()
    return emu.proc, emu.ready


def wait(pred, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.005)
    return False


def answers(url):
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return b"cfbox-watch webhooks" in r.read()
    except OSError:
        return False


def bench_latency(n: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    emu, ready = start_emulator(work)
    daemon = None
    try:
        ctl = EmulatorControl(ready["base_url"])
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        public = f"http://127.0.0.1:{port}/hook"
        cfg = work / "cfbox.yaml"
        cfg.write_text(yaml.safe_dump({
            "state_dir": str(work / "state"), "poll_interval": "1h",
            "connections": {"emu": {"jwt_config": str(work / "config.json"), "base_url": ready["base_url"],
                                    "upload_url": ready["upload_url"],
                                    "webhooks": {"public_url": public, "listen": f"127.0.0.1:{port}"}}},
            "post_production": [{"name": "acme", "connection": "emu", "long_poll": False,
                                 "download_folder_id": ready["folders"]["download"], "incoming": str(work / "in")}]}))
        daemon = subprocess.Popen([sys.executable, "-m", "cfbox_watch", "-c", str(cfg), "run"],
                                  stdout=open(work / "daemon.log", "wb"), stderr=subprocess.STDOUT)
        down = ready["folders"]["download"]
        if not (wait(lambda: answers(public), 30) and
                wait(lambda: any(w["target"]["id"] == down for w in ctl.webhooks()), 30)):
            raise SystemExit("daemon did not start")
        time.sleep(0.5)
        delays = []
        for i in range(n):
            data = os.urandom(64 * 1024)
            path = work / "in" / f"f{i}.jpg"
            t0 = time.monotonic()
            ctl.vendor_upload(down, f"f{i}.jpg", data)
            if not wait(lambda: path.exists() and path.stat().st_size == len(data), 10):
                raise SystemExit(f"f{i}.jpg did not arrive")
            delays.append(time.monotonic() - t0)
        delays.sort()
        return {"files": n, "median_ms": round(statistics.median(delays) * 1000, 1),
                "p90_ms": round(delays[int(0.9 * (n - 1))] * 1000, 1), "max_ms": round(delays[-1] * 1000, 1)}
    finally:
        if daemon is not None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(30)
        emu.terminate()
        emu.wait(10)
        shutil.rmtree(work, ignore_errors=True)


def bench_verify(n: int) -> dict:
    body = json.dumps({"type": "webhook_event", "id": "x", "source": {"name": "a" * 2000}}).encode()
    ts = signature.format_timestamp(time.time())
    headers = {"box-delivery-timestamp": ts, "box-signature-version": "1", "box-signature-algorithm": "HmacSHA256",
               "box-signature-primary": signature.sign(body, ts, "k1"),
               "box-signature-secondary": signature.sign(body, ts, "k2")}
    t0 = time.perf_counter()
    for _ in range(n):
        assert signature.verify(body, headers, "k1", "k2", time.time()).ok
    return {"verifications_per_s": round(n / (time.perf_counter() - t0)), "body_bytes": len(body)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--verify", type=int, default=20000)
    a = ap.parse_args()
    print(json.dumps({"upload_to_local_file_via_webhook": bench_latency(a.files),
                      "signature_verify": bench_verify(a.verify)}, indent=2))


if __name__ == "__main__":
    main()

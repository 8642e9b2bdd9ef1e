"""`cfbox-watch demo --duration 20` runs to completion: files move both ways, clean stop."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cfbox_watch.demo import EXPORTS, FINALS, png_bytes


def test_png_bytes_is_a_valid_png():
    import struct
    import zlib

    data = png_bytes(7, 5, 3)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        chunks.append(kind)
        pos += 12 + length
    assert chunks == [b"IHDR", b"IDAT", b"IEND"]
    w, h = struct.unpack(">II", data[16:24])
    assert (w, h) == (7, 5)
    raw = zlib.decompress(data[data.index(b"IDAT") + 4:data.index(b"IEND") - 8])
    assert len(raw) == h * (1 + 3 * w)
    assert png_bytes(7, 5, 3, invert=True) != data


@pytest.mark.slow
def test_demo_duration_runs_to_completion(tmp_path):
    scratch = tmp_path / "demo"
    out = subprocess.run([sys.executable, "-m", "cfbox_watch", "demo", "--duration", "20",
                          "--dir", str(scratch)], capture_output=True, text=True, timeout=120,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert "READY=1" in text
    for rel in EXPORTS + FINALS:
        assert f"uploaded  {rel} ->" in text, text
    for rel in EXPORTS:
        name = rel.rsplit("/", 1)[-1].replace(".png", "_retouched.png")
        assert f"downloaded {name}" in text, text
        assert (scratch / "studio" / "incoming" / "acme-retouch" / name).is_file()
    assert f"{len(EXPORTS)} photo(s) sent" in text and f"{len(FINALS)} final(s)" in text
    assert "Traceback" not in out.stdout + out.stderr
    assert "What an admin sees meanwhile" in text and "daemon: running, pid" in text
    # Both subprocesses are gone and the daemon stopped cleanly (its log says so).
    log = (scratch / "daemon.log").read_text()
    assert "stopped" in log.splitlines()[-1]


def test_demo_refuses_a_used_folder(tmp_path):
    (tmp_path / "cfbox.yaml").write_text("x: 1\n")
    out = subprocess.run([sys.executable, "-m", "cfbox_watch", "demo", "--duration", "1",
                          "--dir", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 64
    assert "already holds a demo" in out.stderr and "Traceback" not in out.stderr


def test_demo_stops_cleanly_on_ctrl_c(tmp_path):
    import signal
    import time

    scratch = tmp_path / "demo"
    proc = subprocess.Popen([sys.executable, "-m", "cfbox_watch", "demo", "--dir", str(scratch)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL)
    try:
        seen = []
        deadline = time.monotonic() + 60
        for line in proc.stdout:
            seen.append(line)
            if "press Ctrl-C to stop" in line or time.monotonic() > deadline:
                break
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = "".join(seen) + rest
    assert proc.returncode == 0, text
    assert "Summary after" in text and "Traceback" not in text
    assert "stopped" in (scratch / "daemon.log").read_text().splitlines()[-1]

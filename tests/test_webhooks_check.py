"""`cfbox-watch check` with webhooks: keys present, public URL reaches a receiver,
the webhooks on each Download folder listed; never a key in the output."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import yaml

from cfbox_watch.box_adapter import BoxRemote
from cfbox_watch.config_model import Connection


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write(tmp_path: Path, emu, public: str, listen: str) -> Path:
    conn = {**emu.connection(), "webhooks": {"public_url": public, "listen": listen}}
    cfg = tmp_path / "cfbox.yaml"
    cfg.write_text(yaml.safe_dump({
        "state_dir": str(tmp_path / "state"), "connections": {"emu": conn},
        "post_production": [{"name": "acme", "connection": "emu", "download_folder_id": emu.folders["download"],
                             "incoming": str(tmp_path / "in")}]}))
    return cfg


def run(cfg: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cfbox_watch", "-c", str(cfg), "check"], capture_output=True,
                          text=True, timeout=60)


def test_check_reports_keys_url_and_registered_webhooks(tmp_path, emulator):
    port = free_port()
    public = f"http://127.0.0.1:{port}/hook"
    cfg = write(tmp_path, emulator, public, f"127.0.0.1:{port}")
    r = run(cfg)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "signature key(s) present: primary and secondary" in r.stdout
    assert f"public_url: OK, {public} reaches the receiver" in r.stdout
    assert "no webhook yet" in r.stdout
    assert not (tmp_path / "state").exists()      # check creates nothing in state_dir

    remote = BoxRemote.from_connection(Connection(name="emu", jwt_config=emulator.config_path,
                                                  base_url=emulator.base_url, upload_url=emulator.upload_url))
    w = remote.create_webhook(emulator.folders["download"], public, ["FILE.UPLOADED"])
    r = run(cfg)
    assert f"webhook {w.id} -> {public} [FILE.UPLOADED] (ours)" in r.stdout
    secrets = json.loads(emulator.config_path.read_text())["webhooks"].values()
    for k in secrets:
        assert k not in r.stdout + r.stderr


def test_check_fails_when_the_public_url_is_not_our_receiver(tmp_path, emulator):
    # the proxy points somewhere else (here: the emulator, which answers 404 on that path)
    cfg = write(tmp_path, emulator, f"{emulator.base_url}/hook", f"127.0.0.1:{free_port()}")
    r = run(cfg)
    assert r.returncode == 69, r.stdout + r.stderr
    assert "public_url: FAILED" in r.stdout and "answered HTTP 404" in r.stdout


def test_check_fails_without_signature_keys(tmp_path, emulator):
    data = json.loads(emulator.config_path.read_text())
    port = free_port()
    cfg = write(tmp_path, emulator, f"http://127.0.0.1:{port}/hook", f"127.0.0.1:{port}")
    del data["webhooks"]
    emulator.config_path.write_text(json.dumps(data))
    r = run(cfg)
    assert r.returncode == 78
    assert "webhooks: /" in r.stderr and "no webhooks.primaryKey or webhooks.secondaryKey" in r.stderr
    assert "Traceback" not in r.stderr

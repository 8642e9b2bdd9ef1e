"""`cfbox-watch check`: offline through a real subprocess, online against the emulator
with the real box_sdk_gen client."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cfbox_watch import check
from cfbox_watch.config import load_config
from cfbox_watch.errors import EX_CONFIG, EX_OK, EX_UNAVAILABLE

from test_config import BASE, CLIENT_SECRET, PASSPHRASE, write_yaml


def run_check(path: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cfbox_watch", "-c", str(path), "check", *extra],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


# ----------------------------------------------------------------------------- offline

def test_offline_valid_config_prints_summary_and_warnings(tmp_path):
    body = BASE.replace("source: final", "source: not-mounted-yet")
    r = run_check(write_yaml(tmp_path, body), "--offline")
    assert r.returncode == EX_OK, r.stderr
    assert "valid (1 connection(s), 2 mapping(s))" in r.stdout
    assert "warning:" in r.stdout and "not-mounted-yet does not exist" in r.stdout
    assert "Traceback" not in r.stdout + r.stderr


def test_offline_invalid_config_exit_78(tmp_path):
    r = run_check(write_yaml(tmp_path, BASE.replace('"1234"', '"12x"')), "--offline")
    assert r.returncode == EX_CONFIG
    assert "post_production[0].upload_folder_id" in r.stderr and "Traceback" not in r.stderr


def test_offline_makes_no_box_call(tmp_path):
    """base_url points at a port nobody listens on: offline must not notice."""
    body = BASE.replace("    jwt_config: acme-config.json",
                        f"    jwt_config: acme-config.json\n    base_url: http://127.0.0.1:{_free_port()}")
    r = run_check(write_yaml(tmp_path, body), "--offline")
    assert r.returncode == EX_OK, r.stdout + r.stderr


def test_folder_checks_plan(tmp_path):
    body = BASE.replace("    incoming: in", '    incoming: in\n    after_download: move\n'
                        '    archive_folder_id: "4444"')
    config = load_config(write_yaml(tmp_path, body))
    plan = check.folder_checks(config)
    assert [(c.key_path, c.role, c.folder_id, c.needs_write) for c in plan["acme"]] == [
        ("post_production[0].upload_folder_id", "upload", "1234", True),
        ("post_production[0].download_folder_id", "download", "5678", True),
        ("post_production[0].archive_folder_id", "archive", "4444", True),
        ("delivery[0].folder_id", "delivery", "9012", True),
    ]
    keep = load_config(write_yaml(tmp_path, BASE, name="keep.yaml"))
    dl = [c for c in check.folder_checks(keep)["acme"] if c.role == "download"]
    assert [c.needs_write for c in dl] == [False]


# ----------------------------------------------------------------------------- advice table

@pytest.mark.parametrize("code,message,status,needles", [
    # Box's own error descriptions (as the emulator sends them)
    ("unauthorized_client", "This app is not authorized by the enterprise admin", 400,
     ["Platform Apps Manager", "cid-1"]),
    ("invalid_client", "The client credentials are invalid", 400, ["client secret", "config.json"]),
    ("invalid_grant", "Current date time must be before the expiration date time listed in the "
     "'exp' claim.", 400, ["clock", "timedatectl"]),
    ("invalid_grant", '"kid" invalid, unable to lookup correct key', 400, ["key pair"]),
    ("invalid_grant", "Please check the 'sub' claim. The 'sub' specified is invalid.", 400,
     ["enterpriseID", "cid-1"]),
    ("invalid_grant", "something new", 400, ["fresh config.json"]),
    # the Box adapter's rewording of the same errors
    ("invalid_grant", "Box rejected the sign-in because this machine's clock is off", 400, ["timedatectl"]),
    ("invalid_grant", "Box does not know the public key named in x (publicKeyID)", 400, ["key pair"]),
    ("invalid_grant", "Box rejected the enterpriseID in x", 400, ["Account & Billing"]),
    # folder-level
    ("not_found", "Not Found", 404, ["invite AutomationUser_1@boxdevedition.com as Editor on folder 77"]),
    ("access_denied_insufficient_permissions", "denied", 403,
     ["invite AutomationUser_1@boxdevedition.com as Editor on folder 77", "Write all files"]),
    ("unauthorized", "The access token provided is invalid.", 401, ["re-authorization"]),
])
def test_advice_for_each_setup_failure(code, message, status, needles):
    text = check.advice_for(code, message, status, login="AutomationUser_1@boxdevedition.com",
                            folder="77", client_id="cid-1")
    assert text is not None
    for n in needles:
        assert n in text


def test_no_advice_for_unrelated_errors():
    assert check.advice_for("item_name_invalid", "bad name", 400) is None


# ----------------------------------------------------------------------------- online

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def emulator_yaml(tmp_path: Path, emulator, *, delivery_folder: str | None = None,
                  jwt_config: Path | None = None, extra_pp: str = "") -> Path:
    for d in ("out", "in", "final"):
        (tmp_path / d).mkdir(exist_ok=True)
    f = emulator.folders
    p = tmp_path / "cfbox.yaml"
    p.write_text(textwrap.dedent(f"""
        state_dir: state
        connections:
          emu:
            jwt_config: {jwt_config or emulator.config_path}
            base_url: {emulator.base_url}
            upload_url: {emulator.upload_url}
        post_production:
          - name: vendor
            outgoing: out
            upload_folder_id: "{f['upload']}"
            download_folder_id: "{f['download']}"
            incoming: in
        delivery:
          - name: client
            source: final
            folder_id: "{delivery_folder or f['delivery']}"
        """).lstrip().replace("    incoming: in\n", "    incoming: in\n" + extra_pp))
    return p


def _login(emulator) -> str:
    return emulator.service_account["login"]


def test_online_success_prints_service_account_and_every_folder(tmp_path, emulator):
    extra = f'    after_download: move\n    archive_folder_id: "{emulator.folders["archive"]}"\n'
    p = emulator_yaml(tmp_path, emulator, extra_pp=extra)
    before = emulator.control.counters()
    r = run_check(p)
    assert r.returncode == EX_OK, r.stdout + r.stderr
    assert f"signed in as {_login(emulator)}" in r.stdout
    for key in ("post_production[0].upload_folder_id", "post_production[0].download_folder_id",
                "post_production[0].archive_folder_id", "delivery[0].folder_id"):
        assert f"{key} (" in r.stdout and ": OK" in r.stdout.split(key)[1].splitlines()[0]
    assert "all checks passed" in r.stdout
    # the write probe is a preflight only: nothing was created in the upload folder
    assert emulator.control.item_count(emulator.folders["upload"]) == 0
    assert emulator.control.counters() != before


def test_online_folder_not_shared_gives_invite_advice(tmp_path, emulator):
    private = emulator.control.vendor_mkdir("0", "Vendor private")["id"]
    p = emulator_yaml(tmp_path, emulator, delivery_folder=str(private))
    r = run_check(p)
    assert r.returncode == EX_CONFIG, r.stdout + r.stderr
    line = [x for x in r.stdout.splitlines() if x.startswith("delivery[0].folder_id")][0]
    assert f"invite {_login(emulator)} as Editor on folder {private}" in line
    assert "FAILED" in line
    # the other folders were still checked and are fine
    assert "post_production[0].upload_folder_id" in r.stdout
    assert "check found 1 problem(s)" in r.stderr


def test_online_nonexistent_folder(tmp_path, emulator):
    r = run_check(emulator_yaml(tmp_path, emulator, delivery_folder="987654321"))
    assert r.returncode == EX_CONFIG
    assert f"invite {_login(emulator)} as Editor on folder 987654321" in r.stdout


def _tamper(emulator, tmp_path: Path, **changes) -> Path:
    data = json.loads(Path(emulator.config_path).read_text())
    for dotted, value in changes.items():
        cur = data
        *parents, last = dotted.split("__")
        for k in parents:
            cur = cur[k]
        cur[last] = value
    out = tmp_path / "tampered-config.json"
    out.write_text(json.dumps(data))
    out.chmod(0o600)
    return out


def test_online_wrong_client_secret(tmp_path, emulator):
    bad = _tamper(emulator, tmp_path, boxAppSettings__clientSecret="not-the-secret-" + CLIENT_SECRET)
    r = run_check(emulator_yaml(tmp_path, emulator, jwt_config=bad))
    assert r.returncode == EX_CONFIG, r.stdout + r.stderr
    out = r.stdout + r.stderr
    assert "connection emu: FAILED to sign in" in out and "client secret" in out
    assert f"{bad} is out of date" in out
    assert "skipped 3 folder check(s)" in out
    assert "not-the-secret-" not in out and "Traceback" not in out
    secret = json.loads(Path(emulator.config_path).read_text())["boxAppSettings"]["appAuth"]["passphrase"]
    assert secret not in out


def test_online_wrong_enterprise_and_wrong_key_id(tmp_path, emulator):
    r = run_check(emulator_yaml(tmp_path, emulator,
                                jwt_config=_tamper(emulator, tmp_path, enterpriseID="1")))
    assert r.returncode == EX_CONFIG and "Account & Billing" in r.stdout, r.stdout + r.stderr
    r = run_check(emulator_yaml(tmp_path, emulator, jwt_config=_tamper(
        emulator, tmp_path, boxAppSettings__appAuth__publicKeyID="nokey")))
    assert r.returncode == EX_CONFIG and "key pair" in r.stdout, r.stdout + r.stderr


def test_online_app_not_authorized(tmp_path, emulator):
    emulator.control.settings(app_authorized=False)
    r = run_check(emulator_yaml(tmp_path, emulator))
    assert r.returncode == EX_CONFIG
    client_id = json.loads(Path(emulator.config_path).read_text())["boxAppSettings"]["clientID"]
    assert "Platform Apps Manager" in r.stdout and client_id in r.stdout


def test_online_box_unreachable_exit_69(tmp_path, emulator):
    p = emulator_yaml(tmp_path, emulator)
    port = _free_port()
    text = p.read_text().replace(emulator.base_url, f"http://127.0.0.1:{port}")
    p.write_text(text.replace("upload_url: " + f"http://127.0.0.1:{port}/api",
                              f"upload_url: http://127.0.0.1:{port}/api"))
    r = run_check(p)
    assert r.returncode == EX_UNAVAILABLE, r.stdout + r.stderr
    assert "FAILED to sign in" in r.stdout and "Traceback" not in r.stdout + r.stderr

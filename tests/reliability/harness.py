"""Shared machinery for the reliability scenarios (issue 6).

Each scenario drives the real daemon (`python -m cfbox_watch -c FILE run`) as a
subprocess against the emulator fixture, then checks both sides with the emulator's
own view (`files()`/`file_content()`) and the local disk.  Everything the product
prints (daemon output, `status`, `check`, `once`) goes through `Studio.output_files`,
so the secret scan can read every byte of it afterwards.

Scale: CI runs a reduced but meaningful version; `CFBOX_RELIABILITY_FULL=1` runs the
sizes the issue names.  Figures are printed and, when `CFBOX_RELIABILITY_RESULTS` names a
file, appended to it as JSON lines (docs/reliability.md quotes them).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import yaml
from notify_socket import NotifySocket  # noqa: E402

PY = sys.executable
PROJECT = Path(__file__).resolve().parents[2]
FULL = os.environ.get("CFBOX_RELIABILITY_FULL") == "1"
TMP_SUFFIX = ".cfbox-tmp"

# Every output file of every scenario in this pytest session, for the final secret scan.
ALL_OUTPUTS: list[Path] = []
# Every secret seen in this session (emulator credentials and issued tokens).
ALL_SECRETS: set[str] = set()


def scale(ci, full):
    """The CI size, or the issue's full size under CFBOX_RELIABILITY_FULL=1."""
    return full if FULL else ci


def report(scenario: str, **figures) -> dict:
    """Print a scenario's figures (visible with `pytest -s`) and append them to the results file."""
    row = {"scenario": scenario, "mode": "full" if FULL else "ci", **figures}
    line = json.dumps(row, sort_keys=False, default=str)
    print(f"\nRELIABILITY {line}", flush=True)
    target = os.environ.get("CFBOX_RELIABILITY_RESULTS")
    if target:
        with open(target, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    return row


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def wait_until(pred, timeout: float, what: str, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def local_files(root: Path) -> dict[str, bytes]:
    out = {}
    if not root.exists():
        return out
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            out[str(p.relative_to(root))] = p.read_bytes()
    return out


def have_all(root: Path, expected) -> bool:
    """Every expected relpath exists as a file under root (temporaries do not count)."""
    return all((root / rel).is_file() for rel in expected)


def temporaries(root: Path) -> list[str]:
    return [k for k in local_files(root) if k.rsplit("/", 1)[-1].endswith(TMP_SUFFIX)]


def emulator_secrets(emu) -> set[str]:
    """The private key (its base64 body lines), passphrase, client secret, webhook keys and
    every access token the emulator ever issued: none may appear in any output."""
    cfg = json.loads(Path(emu.config_path).read_text())
    app = cfg["boxAppSettings"]
    found = {app["clientSecret"], app["appAuth"]["passphrase"]}
    for line in app["appAuth"]["privateKey"].splitlines():
        if len(line) >= 40 and not line.startswith("-----"):
            found.add(line)
    for k in ("primaryKey", "secondaryKey"):
        v = (cfg.get("webhooks") or {}).get(k)
        if v:
            found.add(v)
    db = Path(emu.data_dir) / "emulator.sqlite3"
    if db.exists():
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            found.update(r[0] for r in conn.execute("SELECT token FROM tokens"))
        finally:
            conn.close()
    return {s for s in found if s and len(s) >= 8}


def leaks(paths, secrets: set[str]) -> list[str]:
    """`file: secret prefix` for every secret found in those files."""
    bad = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            continue
        text = p.read_bytes().decode("utf-8", errors="replace")
        for s in secrets:
            if s in text:
                bad.append(f"{p}: {s[:6]}...")
    return bad


class Studio:
    """One studio: folders, a cfbox.yaml pointing at the emulator, and daemon processes."""

    def __init__(self, tmp_path: Path, emulator, *, name: str = "studio", out: bool = True, inc: bool = True,
                 mapping: dict | None = None, **top):
        self.root = Path(tmp_path) / name
        self.emu = emulator
        self.out = self.root / "out"
        self.inc = self.root / "in"
        self.state = self.root / "state"
        self.cfg_path = self.root / "cfbox.yaml"
        self.out.mkdir(parents=True, exist_ok=True)
        self.output_files: list[Path] = []
        self.procs: list[subprocess.Popen] = []
        self.runs = 0
        self.notify: NotifySocket | None = None
        entry = {"name": "acme", "connection": "emu"}
        if out:
            entry.update(outgoing=str(self.out), upload_folder_id=emulator.folders["upload"])
        if inc:
            entry.update(download_folder_id=emulator.folders["download"], incoming=str(self.inc))
        entry.update(mapping or {})
        self.config = {
            "state_dir": str(self.state),
            "settle_time": "0.5s",
            "poll_interval": "2s",
            "shutdown_grace": "2s",
            "connections": {"emu": emulator.connection()},
            "post_production": [entry],
        }
        self.config.update(top)
        self.write_config()

    @property
    def entry(self) -> dict:
        return self.config["post_production"][0]

    def write_config(self) -> None:
        self.cfg_path.write_text(yaml.safe_dump(self.config, allow_unicode=True))

    def _log(self, kind: str) -> Path:
        p = self.root / f"{kind}-{len(self.output_files):03d}.log"
        self.output_files.append(p)
        ALL_OUTPUTS.append(p)
        return p

    def env(self, extra: dict | None = None) -> dict:
        env = {k: v for k, v in os.environ.items()
               if k not in ("JOURNAL_STREAM", "WATCHDOG_PID", "NOTIFY_SOCKET", "WATCHDOG_USEC")}
        env["PYTHONUNBUFFERED"] = "1"
        if self.notify is not None:
            env.update(NOTIFY_SOCKET=str(self.notify.path), WATCHDOG_USEC="2000000")
        env.update(extra or {})
        return env

    def with_notify(self) -> NotifySocket:
        self.notify = NotifySocket(Path(f"/tmp/cfbox-rel-{os.getpid()}-{time.monotonic_ns()}.sock"))
        return self.notify

    def start(self, env: dict | None = None) -> subprocess.Popen:
        """The daemon as systemd runs it, stdout+stderr to its own log file (verbose, so the
        secret scan reads the debug lines too)."""
        log = self._log("daemon")
        with open(log, "ab") as f:
            proc = subprocess.Popen([PY, "-m", "cfbox_watch", "-c", str(self.cfg_path), "-v", "run"],
                                    stdout=f, stderr=subprocess.STDOUT, env=self.env(env), cwd=PROJECT)
        self.procs.append(proc)
        self.runs += 1
        return proc

    def kill9(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop(self, proc: subprocess.Popen, timeout: float = 30) -> int:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"daemon did not stop within {timeout} s after SIGTERM")

    def cli(self, *args: str, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
        """A one-shot command (`status`, `check`, `once`), its output kept for the secret scan."""
        res = subprocess.run([PY, "-m", "cfbox_watch", "-c", str(self.cfg_path), *args], capture_output=True,
                             text=True, timeout=timeout, env=self.env(env), cwd=PROJECT)
        log = self._log("cli")
        log.write_text(f"$ {' '.join(args)}\n[{res.returncode}]\n{res.stdout}\n{res.stderr}")
        return res

    def daemon_output(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.output_files if p.exists())

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if self.notify is not None:
            self.notify.close()

    def assert_no_secrets(self) -> None:
        secrets = emulator_secrets(self.emu)
        ALL_SECRETS.update(secrets)
        bad = leaks(self.output_files, secrets)
        assert not bad, f"secrets in output: {bad}"

    # -- both sides ----------------------------------------------------------------
    def box_out(self) -> dict[str, dict]:
        return self.emu.control.files(self.emu.folders["upload"])

    def assert_outgoing_exact(self, expected: dict[str, str]) -> dict[str, dict]:
        """Every expected relpath exactly once on Box, SHA-1 equal, one version each, nothing else."""
        on_box = self.box_out()
        got = {k: v["sha1"] for k, v in on_box.items()}
        missing = sorted(set(expected) - set(got))
        extra = sorted(set(got) - set(expected))
        wrong = sorted(k for k in expected if k in got and got[k] != expected[k])
        versions = {k: v.get("version_count", 1) for k, v in on_box.items() if v.get("version_count", 1) != 1}
        assert not (missing or extra or wrong or versions), (
            f"missing={missing[:10]} extra={extra[:10]} wrong_sha1={wrong[:10]} extra_versions={versions}")
        return on_box

    def assert_incoming_exact(self, expected: dict[str, str]) -> None:
        here = local_files(self.inc)
        got = {k: sha1(v) for k, v in here.items()}
        missing = sorted(set(expected) - set(got))
        extra = sorted(set(got) - set(expected))
        wrong = sorted(k for k in expected if k in got and got[k] != expected[k])
        assert not (missing or extra or wrong), f"missing={missing[:10]} extra={extra[:10]} wrong_sha1={wrong[:10]}"


def write_out(root: Path, rel: str, data: bytes) -> str:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return sha1(data)


def vendor_files(emu, spec: dict[str, bytes]) -> dict[str, str]:
    """The vendor puts these files (nested paths) into the Download folder; relpath -> sha1."""
    ctl, root = emu.control, emu.folders["download"]
    folders = {"": root}
    out = {}
    for rel, data in spec.items():
        parts = rel.split("/")
        for i in range(1, len(parts)):
            sub = "/".join(parts[:i])
            if sub not in folders:
                found = ctl.find(root, sub)
                folders[sub] = found["id"] if found else ctl.vendor_mkdir(
                    folders["/".join(parts[:i - 1])], parts[i - 1])["id"]
        ctl.vendor_upload(folders["/".join(parts[:-1])], parts[-1], data)
        out[rel] = sha1(data)
    return out

"""Shared fixtures: a real Box emulator subprocess per test.

`emulator` starts `python -m cfbox_watch emulator` on a free port with its own data
folder and config.json, waits for its ready line, and stops it at teardown.  `.stop()`
and `.start()` restart it on the same data (and, when free, the same port) for outage
tests.  `emulator_factory(*extra_cli_args)` does the same with extra arguments."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cfbox_watch.emulator.control import EmulatorControl

PROJECT = Path(__file__).resolve().parents[1]
READY_TIMEOUT = 30.0


def _die_with_parent() -> None:
    """Linux: the emulator gets SIGTERM when the test process dies, even by SIGKILL or
    a hard timeout that skips fixture teardown, so no emulator outlives its test run."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class EmulatorProcess:
    def __init__(self, workdir: Path, extra_args: tuple[str, ...] = ()):
        self.workdir = Path(workdir)
        self.data_dir = self.workdir / "emulator-data"
        self.config_path = self.workdir / "config.json"
        self.stderr_path = self.workdir / "emulator.stderr"
        self.extra_args = tuple(extra_args)
        self.port = 0
        self.process: subprocess.Popen | None = None
        self.base_url = self.upload_url = ""
        self.folders: dict[str, str] = {}
        self.service_account: dict = {}
        self.control: EmulatorControl | None = None

    def start(self) -> "EmulatorProcess":
        if self.process is not None and self.process.poll() is None:
            return self
        last_error = ""
        for port in ([self.port] * 10 + [0]) if self.port else [0]:
            try:
                self._spawn(port)
                return self
            except RuntimeError as e:  # the old port may still be in TIME_WAIT or taken
                last_error = str(e)
                time.sleep(0.3)
        raise RuntimeError(last_error)

    def _spawn(self, port: int) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "cfbox_watch", "emulator", "--host", "127.0.0.1", "--port", str(port),
               "--data", str(self.data_dir), "--write-config", str(self.config_path), *self.extra_args]
        err = open(self.stderr_path, "ab")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, cwd=PROJECT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        err.close()
        deadline = time.monotonic() + READY_TIMEOUT
        line = b""
        while time.monotonic() < deadline:
            r, _, _ = select.select([proc.stdout], [], [], 0.2)
            if r:
                line = proc.stdout.readline()
                break
            if proc.poll() is not None:
                break
        if not line.strip():
            proc.kill()
            proc.wait()
            raise RuntimeError(f"emulator did not start: {self.stderr_path.read_text(errors='replace')[-2000:]}")
        ready = json.loads(line)
        assert ready["event"] == "ready", ready
        self.process = proc
        self.base_url, self.upload_url = ready["base_url"], ready["upload_url"]
        self.port = int(self.base_url.rsplit(":", 1)[1])
        self.folders = ready["folders"]
        self.service_account = ready["service_account"]
        self.control = EmulatorControl(self.base_url)

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout:
            proc.stdout.close()

    def connection(self) -> dict:
        """A cfbox.yaml `connections:` entry for this emulator."""
        return {"jwt_config": str(self.config_path), "base_url": self.base_url, "upload_url": self.upload_url}


@pytest.fixture
def emulator(tmp_path):
    emu = EmulatorProcess(tmp_path / "emulator").start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def emulator_factory(tmp_path):
    started: list[EmulatorProcess] = []

    def make(*extra_args: str) -> EmulatorProcess:
        emu = EmulatorProcess(tmp_path / f"emulator{len(started)}", extra_args)
        started.append(emu)
        return emu.start()

    try:
        yield make
    finally:
        for emu in started:
            emu.stop()


@pytest.fixture
def box_client():
    """`box_client(emu)` -> a real box_sdk_gen BoxClient (JWT, enterprise subject) for that emulator."""
    from box_sdk_gen import BaseUrls, BoxClient, BoxJWTAuth, JWTConfig

    def make(emu: EmulatorProcess):
        auth = BoxJWTAuth(config=JWTConfig.from_config_file(config_file_path=str(emu.config_path)))
        return BoxClient(auth=auth).with_custom_base_urls(BaseUrls(base_url=emu.base_url, upload_url=emu.upload_url))

    return make

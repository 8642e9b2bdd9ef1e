"""The processes a benchmark runs: the emulator, and the daemon as a user runs it
(`cfbox-watch -c FILE once|run`), each in its own subprocess so that the figures include
what a user pays (start-up, imports, logging) and the CPU of each side stays separable.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from cfbox_watch.emulator.control import EmulatorControl

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _die_with_parent() -> None:
    """A benchmark killed by Ctrl-C or a timeout must not leave servers behind."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _child_env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC",
                                                             "WATCHDOG_PID", "JOURNAL_STREAM")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class Emulator:
    """`cfbox-watch emulator` on a free port with its own data folder."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.config_path = self.workdir / "config.json"
        self.proc: subprocess.Popen | None = None
        self.ready: dict = {}

    def start(self, timeout: float = 30.0) -> "Emulator":
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "cfbox_watch", "emulator", "--host", "127.0.0.1", "--port", "0",
               "--data", str(self.workdir / "data"), "--write-config", str(self.config_path)]
        with open(self.workdir / "emulator.stderr", "ab") as err:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=_child_env(),
                                         preexec_fn=_die_with_parent)
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if r else b""
        if not line.strip():
            self.stop()
            tail = (self.workdir / "emulator.stderr").read_text(errors="replace")[-1500:]
            raise RuntimeError(f"the emulator did not start within {timeout:.0f} s:\n{tail}")
        self.ready = json.loads(line)
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def base_url(self) -> str:
        return self.ready["base_url"]

    @property
    def upload_url(self) -> str:
        return self.ready["upload_url"]

    @property
    def folders(self) -> dict:
        return self.ready["folders"]

    @property
    def control(self) -> EmulatorControl:
        return EmulatorControl(self.base_url, timeout=600)

    def connection(self, **extra) -> dict:
        return {"jwt_config": str(self.config_path), "base_url": self.base_url,
                "upload_url": self.upload_url, **extra}

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout:
            proc.stdout.close()

    def __enter__(self) -> "Emulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@dataclass
class OnceResult:
    rc: int
    wall: float         # seconds
    cpu: float          # user + system seconds of the daemon process
    max_rss_kb: int
    stderr: str


def run_once(config: Path, log_path: Path, *, timeout: float = 3600.0, extra_env: dict | None = None,
             wrap: list[str] | None = None) -> OnceResult:
    """`cfbox-watch -c CONFIG once`, timed; CPU and peak RSS come from wait4's rusage."""
    cmd = [*(wrap or []), sys.executable, "-m", "cfbox_watch", "-c", str(config), "once"]
    t0 = time.monotonic()
    with open(log_path, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=_child_env(extra_env),
                                preexec_fn=_die_with_parent)
    deadline = t0 + timeout
    try:
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                pid, status, ru = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
    except BaseException:   # interrupted: the daemon stops with us, in order
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
    wall = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return OnceResult(rc=proc.returncode, wall=wall, cpu=ru.ru_utime + ru.ru_stime,
                      max_rss_kb=ru.ru_maxrss, stderr=Path(log_path).read_text(errors="replace"))


@dataclass(frozen=True)
class ProcSample:
    t: float            # monotonic
    cpu: float          # user + system seconds so far
    rss_kb: int
    rchar: int          # bytes read through read(2) and friends so far


def sample(pid: int) -> ProcSample | None:
    """/proc figures of one process; None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()
        cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
        rss = 0
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
        rchar = 0
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("rchar:"):
                rchar = int(line.split()[1])
        return ProcSample(time.monotonic(), cpu, rss, rchar)
    except (OSError, ValueError, IndexError):
        return None


class NotifySocket:
    """A stand-in for systemd's notify socket, so `run` announces READY=1 to us exactly
    as it does under `Type=notify`."""

    def __init__(self, path: Path):
        self.path = str(path)
        if os.path.exists(self.path):
            os.unlink(self.path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)

    def wait_for(self, word: str, timeout: float) -> float | None:
        """Monotonic time the message containing `word` arrived, or None."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r, _, _ = select.select([self.sock], [], [], max(0.0, deadline - time.monotonic()))
            if r:
                msg = self.sock.recv(65536).decode(errors="replace")
                if word in msg.split("\n"):
                    return time.monotonic()
        return None

    def close(self) -> None:
        self.sock.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


class Daemon:
    """`cfbox-watch -c CONFIG run` with a notify socket, sampled through /proc."""

    def __init__(self, config: Path, workdir: Path, name: str = "daemon"):
        self.config = Path(config)
        self.workdir = Path(workdir)
        self.log_path = self.workdir / f"{name}.stderr"
        self.notify = NotifySocket(self.workdir / f"{name}.notify")
        self.proc: subprocess.Popen | None = None
        self.started = 0.0

    def start(self) -> "Daemon":
        cmd = [sys.executable, "-m", "cfbox_watch", "-c", str(self.config), "run"]
        with open(self.log_path, "wb") as err:
            self.started = time.monotonic()
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err,
                                         env=_child_env({"NOTIFY_SOCKET": self.notify.path}),
                                         preexec_fn=_die_with_parent)
        return self

    def wait_ready(self, timeout: float = 600.0) -> float:
        """Seconds from the process start to READY=1."""
        t = self.notify.wait_for("READY=1", timeout)
        if t is None:
            raise RuntimeError(f"the daemon did not report READY=1 within {timeout:.0f} s; "
                               f"see {self.log_path}:\n{self.log_tail()}")
        return t - self.started

    def wait_idle(self, *, quiet_cpu: float = 0.03, window: float = 1.0, timeout: float = 600.0) -> float:
        """Seconds from the process start until a `window` in which it used less than
        `quiet_cpu` CPU seconds began: it has nothing left to do."""
        deadline = time.monotonic() + timeout
        samples: list[ProcSample] = []
        while time.monotonic() < deadline:
            s = sample(self.proc.pid)
            if s is None:
                raise RuntimeError(f"the daemon exited; see {self.log_path}:\n{self.log_tail()}")
            samples.append(s)
            first = next((p for p in samples if s.t - p.t <= window), s)
            if s.t - first.t >= window * 0.9 and s.cpu - first.cpu < quiet_cpu:
                return first.t - self.started
            time.sleep(0.05)
        raise RuntimeError(f"the daemon did not become idle within {timeout:.0f} s")

    def sample(self) -> ProcSample | None:
        return sample(self.proc.pid)

    def log_tail(self, n: int = 1500) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> int | None:
        proc, self.proc = self.proc, None
        self.notify.close()
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

"""systemd's end of sd_notify for tests: a real unix datagram socket that records every
message with its arrival time, so READY/STATUS/WATCHDOG/RELOADING/STOPPING can be
checked and watchdog pings counted.  Shared by the daemon tests and the reliability
harness."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path


class NotifySocket:
    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.done.is_set():
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.messages.append((time.monotonic(), data.decode(errors="replace")))

    def snapshot(self) -> list[tuple[float, str]]:
        with self.lock:
            return list(self.messages)

    def times(self, line: str) -> list[float]:
        """Arrival times of the messages that contain `line` as one of their lines."""
        return [t for t, m in self.snapshot() if line in m.split("\n")]

    def count(self, line: str) -> int:
        return len(self.times(line))

    def wait_for(self, line: str, timeout: float, after: int = 0) -> tuple[float, str]:
        """The first message at index >= `after` containing `line` as one of its lines."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, (t, m) in enumerate(self.snapshot()):
                if i >= after and line in m.split("\n"):
                    return t, m
            time.sleep(0.05)
        raise AssertionError(f"no {line!r} within {timeout} s; got {self.snapshot()[after:]}")

    def close(self):
        self.done.set()
        self.sock.close()
        self.path.unlink(missing_ok=True)

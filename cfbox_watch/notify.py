"""The daemon's side of the sd_notify conversation with systemd.

A thin layer over `sdnotify`: it is a no-op outside systemd (no NOTIFY_SOCKET), so the
daemon code can talk to systemd unconditionally, and it works out the watchdog cadence
from WATCHDOG_USEC / WATCHDOG_PID the way sd_watchdog_enabled() does, so the daemon
pings at half the configured timeout (systemd's own recommendation).
"""

from __future__ import annotations

import os
import time
from typing import Mapping

import sdnotify


def watchdog_interval(env: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings, or None when systemd's watchdog is off for us.

    WATCHDOG_PID names the process the watchdog is meant for; a child that inherited
    the variable (e.g. a helper started by the daemon) must not ping in its place.
    """
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC", "").strip()
    if not usec:
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    if value <= 0:
        return None
    wpid = env.get("WATCHDOG_PID", "").strip()
    if wpid:
        try:
            if int(wpid) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            return None
    return value / 1_000_000 / 2


def status_line(text: str) -> str:
    # STATUS= is one line; a newline would start a new (bogus) assignment.
    return " ".join(text.split())[:900]


class Notifier:
    """Sends state changes to systemd; silently does nothing outside systemd."""

    def __init__(self, env: Mapping[str, str] | None = None):
        env = os.environ if env is None else env
        self.enabled = bool(env.get("NOTIFY_SOCKET"))
        self.watchdog_interval = watchdog_interval(env)
        self._last_status: str | None = None
        self._sd = sdnotify.SystemdNotifier() if self.enabled else None

    def send(self, *assignments: str) -> None:
        if self._sd is not None:
            self._sd.notify("\n".join(assignments))

    def ready(self, status: str | None = None) -> None:
        lines = ["READY=1"]
        if status is not None:
            lines.append("STATUS=" + status_line(status))
            self._last_status = status_line(status)
        self.send(*lines)

    def reloading(self) -> None:
        # systemd >= 253 with Type=notify-reload needs MONOTONIC_USEC to tell this
        # reload from an older one; older systemd ignores the extra line.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def status(self, text: str) -> bool:
        """Send STATUS= when it changed; returns True when something was sent."""
        line = status_line(text)
        if line == self._last_status:
            return False
        self._last_status = line
        self.send("STATUS=" + line)
        return True

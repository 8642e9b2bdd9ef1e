"""notify.py against a real unix datagram socket, and the daemon's plain decisions."""

from __future__ import annotations

import os
import socket
import time

import pytest

from cfbox_watch import daemon
from cfbox_watch.config_model import Config, Connection, IncomingMapping, OutgoingMapping
from cfbox_watch.notify import Notifier, watchdog_interval


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    yield sock
    sock.close()


def test_notifier_sends_state_changes(notify_socket):
    n = Notifier()
    n.ready("a: 1 queued\nsecond line")
    assert notify_socket.recv(4096) == b"READY=1\nSTATUS=a: 1 queued second line"
    n.reloading()
    msg = notify_socket.recv(4096).decode()
    first, second = msg.split("\n")
    assert first == "RELOADING=1"
    usec = int(second.removeprefix("MONOTONIC_USEC="))
    assert abs(usec - time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000) < 5_000_000
    assert n.status("same") and not n.status("same")  # unchanged STATUS is not re-sent
    assert notify_socket.recv(4096) == b"STATUS=same"
    n.watchdog()
    assert notify_socket.recv(4096) == b"WATCHDOG=1"
    n.stopping()
    assert notify_socket.recv(4096) == b"STOPPING=1"


def test_abstract_namespace_socket(monkeypatch):
    name = f"cfbox-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        Notifier().ready()
        assert sock.recv(100) == b"READY=1"
    finally:
        sock.close()


def test_notifier_is_a_noop_outside_systemd(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = Notifier()
    assert not n.enabled
    n.ready("x")
    n.watchdog()  # nothing to assert beyond "does not raise": there is no socket at all


def test_watchdog_interval():
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "4000000"}) == 2.0
    assert watchdog_interval({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}) == 2.0
    assert watchdog_interval({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}, pid=2) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None


def _cfg(tmp_path, outgoing=(), incoming=(), conns=None, state_dir=None) -> Config:
    conns = conns or {"acme": Connection("acme", tmp_path / "c.json")}
    return Config(path=tmp_path / "cfbox.yaml", state_dir=state_dir or tmp_path / "state",
                  connections=conns, outgoing=tuple(outgoing), incoming=tuple(incoming))


def _out(tmp_path, name, **kw):
    return OutgoingMapping(name=name, kind="post_production", connection=kw.pop("connection", "acme"),
                           local=tmp_path / name, folder_id="1", key_path="post_production[0]", **kw)


def _in(tmp_path, name, **kw):
    return IncomingMapping(name=name, connection="acme", folder_id="2", local=tmp_path / f"{name}-in",
                           key_path="post_production[0]", **kw)


def test_plan_reload_keeps_unchanged_and_restarts_changed(tmp_path):
    old = daemon.side_specs(_cfg(tmp_path, [_out(tmp_path, "a"), _out(tmp_path, "b")], [_in(tmp_path, "a")]))
    new = daemon.side_specs(_cfg(tmp_path, [_out(tmp_path, "a"), _out(tmp_path, "b", settle_time=9),
                                            _out(tmp_path, "c")]))
    plan = daemon.plan_reload(old, new)
    assert plan.keep == ("a:out",)
    assert plan.stop == ("a:in", "b:out")
    assert plan.start == ("b:out", "c:out")
    assert daemon.plan_reload(old, old).is_noop()


def test_plan_reload_connection_or_state_dir_change_restarts_its_sides(tmp_path):
    cfg = _cfg(tmp_path, [_out(tmp_path, "a")], [_in(tmp_path, "a")])
    other_conn = _cfg(tmp_path, [_out(tmp_path, "a")], [_in(tmp_path, "a")],
                      conns={"acme": Connection("acme", tmp_path / "c.json", read_timeout=5)})
    plan = daemon.plan_reload(daemon.side_specs(cfg), daemon.side_specs(other_conn))
    assert plan.stop == plan.start == ("a:in", "a:out")
    moved = _cfg(tmp_path, [_out(tmp_path, "a")], [_in(tmp_path, "a")], state_dir=tmp_path / "s2")
    assert daemon.plan_reload(daemon.side_specs(cfg), daemon.side_specs(moved)).start == ("a:in", "a:out")


def test_status_text_one_line_per_mapping():
    s = daemon.status_text({
        "acme:out": {"queued": 2, "active": 1, "failed": 0, "last_success": None, "state": "running"},
        "acme:in": {"queued": 1, "active": 0, "failed": 1, "last_success": "2000-01-01T10:00:00+00:00"},
        "brand:out": {"queued": 0, "active": 0, "failed": 0, "state": "failed",
                      "error": "folder 9 not shared with the service account\nmore"},
    })
    assert "\n" not in s
    assert s.startswith("acme: 3 queued, 1 active, 1 failed, last 2000-01-01 ")
    assert "brand: 0 queued, 0 active, 0 failed, last never (STOPPED: folder 9 not shared" in s
    assert daemon.status_text({}) == "no mappings configured"


def test_once_exit_codes():
    assert daemon.once_exit_code({"a:out": "ok", "a:in": "ok"}) == 0
    assert daemon.once_exit_code({"a:out": "ok", "b:out": "failed"}) == 1
    assert daemon.once_exit_code({"a:out": "unreachable", "b:out": "failed"}) == 75
    assert daemon.once_exit_code({"a:out": "unreachable", "b:out": "setup"}) == 78
    assert daemon.once_exit_code({}) == 0

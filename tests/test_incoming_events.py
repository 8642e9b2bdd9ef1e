"""The event loop against the emulator: tree checks, dedup by event_id, persisted position."""

from __future__ import annotations

import threading
import time

from cfbox_watch.box_adapter import BoxRemote
from cfbox_watch.config_model import Connection
from cfbox_watch.db import open_db
from cfbox_watch.incoming import state
from cfbox_watch.incoming.events import EventLoop, TreeMembership, folders_to_check


def remote_for(emu) -> BoxRemote:
    return BoxRemote.from_connection(Connection("emu", emu.config_path, emu.base_url, emu.upload_url))


def test_only_events_inside_the_watched_tree_count(emulator):
    ctl, f = emulator.control, emulator.folders
    remote = remote_for(emulator)
    pos = remote.event_stream_now()
    d1 = ctl.vendor_mkdir(f["download"], "d1")["id"]
    d2 = ctl.vendor_mkdir(d1, "d2")["id"]
    ctl.vendor_upload(d2, "deep.jpg", b"x")
    ctl.vendor_upload(f["upload"], "elsewhere.jpg", b"y")
    other = ctl.vendor_mkdir(f["upload"], "sub")["id"]
    ctl.vendor_upload(other, "elsewhere2.jpg", b"z")
    events, _ = remote.get_events(pos)
    assert len(events) >= 6
    tree = TreeMembership(remote, f["download"], known=lambda: {f["download"]: ""})
    got = folders_to_check(events, tree)
    assert got == {f["download"], d1, d2}  # d2 found by walking up: d2 -> d1 -> Download
    before = remote.calls()
    assert folders_to_check(events, tree) == got
    assert remote.calls() == before  # answers are cached, no more Box calls
    # a folder the cache knows as outside is moved in: its new files count
    pos2 = remote.event_stream_now()
    ctl.vendor_move(other, f["download"], type="folder")
    ctl.vendor_upload(other, "moved-in.jpg", b"m")
    events2, _ = remote.get_events(pos2)
    assert folders_to_check(events2, tree) == {f["download"], other}


def test_event_loop_dedups_and_persists_position(emulator, tmp_path):
    ctl, f = emulator.control, emulator.folders
    ctl.settings(longpoll_hold=2)
    db = tmp_path / "state.sqlite3"
    seen: list[set[str]] = []

    def run_loop(stop):
        remote = remote_for(emulator)
        tree = TreeMembership(remote, f["download"], known=lambda: {f["download"]: ""})
        loop = EventLoop(remote, db, "k", tree, seen.append, stop)
        t = threading.Thread(target=loop.run, daemon=True)
        t.start()
        return loop, t

    stop = threading.Event()
    loop, t = run_loop(stop)
    deadline = time.monotonic() + 10
    while loop.batches < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    ctl.vendor_upload(f["download"], "a.jpg", b"a")
    deadline = time.monotonic() + 10
    while not seen and time.monotonic() < deadline:
        time.sleep(0.05)
    assert seen == [{f["download"]}]
    stop.set()
    t.join(5)

    conn = open_db(db)
    pos = state.stream_position(conn, "k")
    assert pos and int(pos) > 0
    # Box repeats events: rewind the stored position, keep the handled ids
    state.save_stream(conn, "k", "0")
    conn.close()
    seen.clear()
    stop2 = threading.Event()
    loop2, t2 = run_loop(stop2)
    deadline = time.monotonic() + 10
    while loop2.batches < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    assert seen == []  # every event was already handled
    ctl.vendor_upload(f["download"], "b.jpg", b"b")
    deadline = time.monotonic() + 10
    while not seen and time.monotonic() < deadline:
        time.sleep(0.05)
    assert seen == [{f["download"]}]
    stop2.set()
    t2.join(5)


def test_a_refused_stream_position_restarts_from_now_and_asks_for_a_listing(emulator, tmp_path):
    ctl, f = emulator.control, emulator.folders
    ctl.settings(longpoll_hold=2)
    db = tmp_path / "state.sqlite3"
    conn = open_db(db)
    state.ensure(conn)
    state.save_stream(conn, "k", "not-a-position")
    conn.close()
    seen: list[set[str]] = []
    stop = threading.Event()
    remote = remote_for(emulator)
    loop = EventLoop(remote, db, "k", TreeMembership(remote, f["download"], known=lambda: {}),
                     seen.append, stop)
    t = threading.Thread(target=loop.run, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 10
        while loop.batches < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert seen == [{f["download"]}]  # the gap is covered by a full listing
        ctl.vendor_upload(f["download"], "after.jpg", b"a")
        deadline = time.monotonic() + 10
        while len(seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert seen[1:] == [{f["download"]}]
    finally:
        stop.set()
        t.join(5)

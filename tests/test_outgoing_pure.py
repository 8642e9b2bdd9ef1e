"""Pure parts of the outgoing side: planner rules (with hypothesis), settle checks,
filters, mount-table parsing, scanner and queue transitions on a real SQLite file."""

from __future__ import annotations

import os
import socket
import struct
import time

import pytest
from hypothesis import given, settings, strategies as hs

from cfbox_watch.config_model import DEFAULT_EXCLUDE
from cfbox_watch.db import open_db
from cfbox_watch.outgoing import planner, settle, state
from cfbox_watch.outgoing.filters import dir_excluded, file_wanted
from cfbox_watch.outgoing.scanner import FileStat, scan
from cfbox_watch.outgoing.watcher import choose_mode, fs_type_for, parse_mounts

# --- planner: exactly-once rules ------------------------------------------------------

# A simulated file: a sequence of steps, each either "write" (content changes: new
# size/mtime) or "wait" (time passes).  A scanner looks every `tick` seconds; the
# simulated queue follows the planner; an upload happens when a row becomes ready.
steps = hs.lists(hs.tuples(hs.sampled_from(["write", "wait", "replace"]),
                           hs.floats(min_value=0.05, max_value=5.0)), min_size=1, max_size=25)


def simulate(steps, settle_time, tick=0.25):
    now = 0.0
    version = 0
    inode = 100
    st = FileStat("a.jpg", 1, 1, inode)
    row = None
    uploads = []          # (time, version)
    history = [(0.0, 0)]  # (time the content became version v, v)
    for kind, dt in steps:
        if kind == "write":
            version += 1
            st = FileStat("a.jpg", st.size + 1, st.mtime_ns + 1, inode)
            history.append((now, version))
        elif kind == "replace":          # temp-then-rename: same size, new inode
            version += 1
            inode += 1
            st = FileStat("a.jpg", st.size, st.mtime_ns, inode)
            history.append((now, version))
        end = now + dt
        while now < end:
            now = min(end, now + tick)
            d = planner.observe(row, st, now)
            if d.action == "track":
                row = planner.Row("a.jpg", "settling", st.size, st.mtime_ns, st.inode,
                                  d.stable_since, row.sha1 if row else None,
                                  row.box_file_id if row else None)
            if row.status == "settling":
                p = planner.promote(row, st, now, settle_time)
                if p.action == "ready":
                    kind_ = planner.plan_upload(row, f"sha{version}", "version")
                    if kind_ != "already":
                        uploads.append((now, version))
                    row = planner.Row("a.jpg", "done", row.size, row.mtime_ns, row.inode,
                                      row.stable_since, f"sha{version}", "F1")
    return uploads, history, version, now


@settings(max_examples=300, deadline=None)
@given(steps, hs.floats(min_value=0.3, max_value=3.0))
def test_each_upload_is_of_settled_content_and_never_repeated(steps, settle_time):
    uploads, history, final, end = simulate(steps, settle_time)
    versions = [v for _, v in uploads]
    # exactly once: no content version is uploaded twice
    assert len(versions) == len(set(versions))
    # never a half-written file: the uploaded version had been unchanged for settle_time
    for t, v in uploads:
        since = max(ts for ts, ver in history if ver == v)
        assert t - since >= settle_time - 1e-9
        # and no newer version had appeared yet
        assert all(ts >= t or ver <= v for ts, ver in history)


@settings(max_examples=200, deadline=None)
@given(steps, hs.floats(min_value=0.3, max_value=3.0))
def test_final_content_arrives_once_it_stays_still(steps, settle_time):
    uploads, history, final, end = simulate(steps + [("wait", settle_time + 1.0)], settle_time)
    assert uploads and uploads[-1][1] == final


def test_unchanged_done_row_needs_nothing():
    row = planner.Row("a", "done", 5, 7, 9, 0.0, "abc", "F1")
    assert planner.observe(row, FileStat("a", 5, 7, 9), 100.0).action == "nothing"
    assert planner.observe(row, FileStat("a", 5, 8, 9), 100.0).action == "track"
    assert planner.observe(row, FileStat("a", 5, 7, 10), 100.0).action == "track"
    up = planner.Row("a", "uploading", 5, 7, 9)
    assert planner.observe(up, FileStat("a", 6, 8, 9), 1.0).action == "nothing"


def test_plan_upload_and_conflicts():
    new = planner.Row("a", "pending", 1, 1, 1)
    assert planner.plan_upload(new, "s1", "version") == "new"
    known = planner.Row("a", "pending", 1, 1, 1, 0, "s1", "F")
    assert planner.plan_upload(known, "s1", "skip") == "already"
    assert planner.plan_upload(known, "s2", "version") == "version"
    assert planner.plan_upload(known, "s2", "rename") == "rename"
    assert planner.plan_upload(known, "s2", "skip") == "skip"
    assert planner.on_name_conflict("ABC", "abc", "version") == "already"
    assert planner.on_name_conflict("abc", None, "version") == "version"
    assert planner.on_name_conflict("abc", "def", "rename") == "rename"


def test_renamed():
    assert planner.renamed("look.jpg", 1) == "look (1).jpg"
    assert planner.renamed("a.tar.gz", 2) == "a.tar (2).gz"
    assert planner.renamed("README", 3) == "README (3)"
    assert planner.renamed(".hidden", 1) == ".hidden (1)"


@given(hs.integers(0, 40), hs.one_of(hs.none(), hs.floats(0.1, 1000)), hs.floats(0, 0.999))
def test_backoff_honours_retry_after_and_cap(attempts, retry_after, rand):
    d = planner.backoff(attempts, retry_after, rand)
    assert d > 0
    if retry_after:
        assert d >= retry_after
        assert d <= max(retry_after * 1.1, 600) + 1e-6
    else:
        assert d <= 300


@given(hs.integers(1, 10_000), hs.integers(1, 999), hs.data())
def test_part_ranges_cover_exactly(size, part_size, data):
    parts = planner.part_ranges(size, part_size)
    assert sum(n for _, n in parts) == size
    assert all(n == part_size for _, n in parts[:-1])
    assert [o for o, _ in parts] == list(range(0, size, part_size))
    have = data.draw(hs.sets(hs.sampled_from(parts)))
    missing = planner.missing_parts(size, part_size, have)
    assert set(missing) | have == set(parts) and not (set(missing) & have)


# --- settle: image completeness ------------------------------------------------------

def _jpeg():
    return b"\xff\xd8\xff\xe0" + b"\x00" * 500 + b"\xff\xd9"


def _png():
    return b"\x89PNG\r\n\x1a\n" + b"\x00" * 100 + b"\x00\x00\x00\x00IEND\xaeB`\x82"


def _tiff():
    body = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1) + b"\x00" * 12 + b"\x00" * 4
    return body + b"\x00" * 100


def _psd():
    head = b"8BPS" + struct.pack(">H", 1) + b"\x00" * 20
    return head + struct.pack(">I", 4) + b"abcd" + struct.pack(">I", 0) + struct.pack(">I", 0) + b"\x00" * 50


@pytest.mark.parametrize("name,data", [("a.jpg", _jpeg()), ("a.PNG", _png()),
                                       ("a.tif", _tiff()), ("a.psd", _psd())])
def test_complete_images_pass_and_truncated_fail(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data)
    assert settle.image_problem(p, len(data)) is None
    cut = data[: len(data) // 3] if name != "a.tif" else data[:12]
    p.write_bytes(cut)
    assert settle.image_problem(p, len(cut)) is not None
    if name == "a.psd":
        cut = data[:20]
        p.write_bytes(cut)
        assert "PSD" in settle.image_problem(p, len(cut))


def test_unknown_formats_are_not_checked(tmp_path):
    p = tmp_path / "a.cr3"
    p.write_bytes(b"xx")
    assert settle.image_problem(p, 2) is None
    p = tmp_path / "b.jpg"
    p.write_bytes(b"")
    assert settle.image_problem(p, 0) == "image file is empty"


# --- filters ----------------------------------------------------------------------------

@pytest.mark.parametrize("rel,wanted", [
    ("a.jpg", True), ("shoot/a.jpg", True), (".DS_Store", False), ("x/.hidden/a.jpg", False),
    ("a.tmp", False), ("a.JPG.part", False), ("~$doc.docx", False), ("THUMBS.DB", False),
    ("CaptureOne/Cache/a.jpg", False), ("Photoshop Temp123", False), ("desktop.ini", False),
])
def test_default_filters(rel, wanted):
    assert file_wanted(rel, ("*",), DEFAULT_EXCLUDE) is wanted


def test_include_and_dir_exclude():
    assert file_wanted("s/a.JPG", ("*.jpg",), ())
    assert not file_wanted("s/a.cr3", ("*.jpg",), ())
    assert file_wanted("s/a.cr3", ("s/*",), ())
    assert dir_excluded("a/CaptureOne", DEFAULT_EXCLUDE)
    assert not dir_excluded("a/b", DEFAULT_EXCLUDE)


# --- watch mode from the mount table --------------------------------------------------

MOUNTS = """\
/dev/sda1 / ext4 rw 0 0
server:/export /srv/studio nfs4 rw 0 0
//nas/share /mnt/nas cifs rw 0 0
/dev/sdb1 /srv/studio/local ext4 rw 0 0
user@h:/x /mnt/my\\040share fuse.sshfs rw 0 0
"""


def test_mount_table_choice():
    m = parse_mounts(MOUNTS)
    assert fs_type_for("/srv/studio/outgoing", m) == "nfs4"
    assert fs_type_for("/srv/studio/local/x", m) == "ext4"
    assert fs_type_for("/srv/studiox", m) == "ext4"
    assert fs_type_for("/mnt/my share/out", m) == "fuse.sshfs"
    assert choose_mode("auto", "nfs4") == "poll"
    assert choose_mode("auto", "cifs") == "poll"
    assert choose_mode("auto", "fuse.sshfs") == "poll"
    assert choose_mode("auto", "ext4") == "inotify"
    assert choose_mode("poll", "ext4") == "poll"
    assert choose_mode("inotify", "nfs") == "inotify"


# --- scanner ------------------------------------------------------------------------

def test_scan_skips_symlinks_specials_and_bad_names(tmp_path):
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "x.jpg").write_bytes(b"1")
    (root / "top.jpg").write_bytes(b"22")
    (root / ".DS_Store").write_bytes(b"")
    (tmp_path / "secret.txt").write_bytes(b"s")
    (root / "escape.txt").symlink_to(tmp_path / "secret.txt")
    (root / "outdir").symlink_to(tmp_path)
    os.mkfifo(root / "pipe")
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(root / "sock"))
    bad = os.fsencode(root) + b"/bad\xff.jpg"
    with open(bad, "wb") as f:
        f.write(b"x")
    snap = scan(root, ("*",), DEFAULT_EXCLUDE)
    s.close()
    assert set(snap.files) == {"a/b/x.jpg", "top.jpg"}
    assert snap.files["top.jpg"].size == 2
    kinds = {(p, k) for p, k, _ in snap.skipped}
    assert ("escape.txt", "symlink") in kinds and ("outdir", "symlink") in kinds
    assert ("pipe", "special") in kinds and ("sock", "special") in kinds
    assert ("bad\\xff.jpg", "badname") in kinds


def test_scan_survives_vanishing_entries(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "f.jpg").write_bytes(b"1")

    def racy(path):
        entries = list(os.scandir(path))
        for e in entries:  # everything vanishes between listing and stat
            if e.is_dir():
                os.rmdir(e.path)
            else:
                os.unlink(e.path)
        return entries

    snap = scan(tmp_path, ("*",), ())
    assert "f.jpg" in snap.files
    snap = scan(tmp_path, ("*",), (), scandir=racy)
    assert snap.files == {}


# --- state transitions on a real SQLite file -------------------------------------------

def test_state_queue_and_claims(tmp_path):
    conn = open_db(tmp_path / "s.sqlite3")
    state.init(conn)
    state.init(conn)  # idempotent
    st = FileStat("a/x.jpg", 3, 10, 7)
    assert state.observe(conn, "m", st, 100.0)
    assert not state.observe(conn, "m", st, 101.0)
    assert state.get(conn, "m", "a/x.jpg")["status"] == "settling"
    assert state.set_status(conn, "m", "a/x.jpg", "pending", expect="settling")
    conn2 = open_db(tmp_path / "s.sqlite3")
    got = [state.claim_next(conn, "m", time.time()), state.claim_next(conn2, "m", time.time())]
    assert sum(g is not None for g in got) == 1
    assert state.get(conn, "m", "a/x.jpg")["status"] == "uploading"
    # a scan never touches a row being uploaded
    assert not state.observe(conn, "m", FileStat("a/x.jpg", 4, 11, 7), 102.0)
    assert state.release_stale_claims(conn, "m") == 1
    state.set_status(conn, "m", "a/x.jpg", "failed", last_error="boom")
    s = state.summarize(conn2, "m")
    assert s["failed"] == 1 and s["problems"][0]["error"] == "boom"
    assert state.requeue_failed(conn2, "other") == 0
    assert state.requeue_failed(conn2, "m", ["a/x.jpg"]) == 1
    assert state.get(conn, "m", "a/x.jpg")["status"] == "pending"
    # vanished files that were only waiting are dropped; done rows are kept
    state.observe(conn, "m", FileStat("tmp.jpg", 1, 1, 1), 1.0)
    state.set_status(conn, "m", "a/x.jpg", "done", done_at=time.time())
    assert state.vanished(conn, "m", set()) == 1
    assert state.get(conn, "m", "a/x.jpg") is not None
    assert state.summarize(conn, "m")["done_today"] == 1
    ro = open_db(tmp_path / "s.sqlite3", readonly=True)
    assert state.summarize(ro, "m")["last_success"]


def test_summarize_on_a_fresh_db(tmp_path):
    conn = open_db(tmp_path / "fresh.sqlite3")
    assert state.summarize(conn, "m")["queued"] == 0
    assert state.requeue_failed(conn) == 0


@settings(max_examples=40, deadline=None)
@given(hs.integers(1, 6), hs.lists(hs.tuples(hs.integers(0, 1), hs.sampled_from(["claim", "finish", "retry"])),
                                    max_size=40))
def test_two_connections_never_hold_the_same_claim(tmp_path_factory, n, ops):
    path = tmp_path_factory.mktemp("q") / "s.sqlite3"
    conns = [open_db(path), open_db(path)]
    state.init(conns[0])
    for i in range(n):
        state.observe(conns[0], "m", FileStat(f"f{i}", 1, 1, i), 0.0)
        state.set_status(conns[0], "m", f"f{i}", "pending")
    held: dict[str, int] = {}
    finished: set[str] = set()
    for who, op in ops:
        c = conns[who]
        mine = [r for r, w in held.items() if w == who]
        if op == "claim":
            r = state.claim_next(c, "m", 1e12)
            if r is not None:
                assert r["relpath"] not in held and r["relpath"] not in finished
                held[r["relpath"]] = who
        elif mine and op == "finish":
            assert state.set_status(c, "m", mine[0], "done", expect="uploading")
            held.pop(mine[0])
            finished.add(mine[0])
        elif mine and op == "retry":
            assert state.set_status(c, "m", mine[0], "pending", expect="uploading")
            held.pop(mine[0])
    assert finished.isdisjoint(held)
    c = state.counts(conns[0], "m")
    assert c.get("done", 0) == len(finished) and c.get("uploading", 0) == len(held)

"""The incoming side against the emulator: the real box_sdk_gen client over HTTP, real
files, real SQLite, real subprocesses (issue 4, Tests)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import pytest

from cfbox_watch.box_adapter import BoxRemote
from cfbox_watch.config_model import Config, Connection, IncomingMapping
from cfbox_watch.db import db_path, open_db
from cfbox_watch.incoming import state
from cfbox_watch.incoming.engine import IncomingSide

DL = "GET /2.0/files/{id}/content"


def sha(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def build(emu, tmp_path: Path, **kw):
    conn = Connection("emu", emu.config_path, emu.base_url, emu.upload_url)
    opts = dict(name="acme", connection="emu", folder_id=emu.folders["download"],
                local=tmp_path / "incoming", key_path="post_production[0]", long_poll=False)
    opts.update(kw)
    m = IncomingMapping(**opts)
    cfg = Config(path=tmp_path / "cfbox.yaml", state_dir=tmp_path / "state", connections={"emu": conn},
                 incoming=(m,))
    return cfg, m, conn


def make_side(emu, tmp_path: Path, **kw) -> IncomingSide:
    cfg, m, conn = build(emu, tmp_path, **kw)
    side = IncomingSide(cfg, m, BoxRemote.from_connection(conn))
    side.once_retry_cap = 0.3
    return side


def local_files(root: Path) -> dict[str, bytes]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            try:
                out[str(p.relative_to(root))] = p.read_bytes()
            except FileNotFoundError:  # a temporary renamed into place while we walked
                continue
    return out


def temporaries(root: Path) -> list[str]:
    return [k for k in local_files(root) if k.rsplit("/", 1)[-1].endswith(".cfbox-tmp")]


def downloads(emu) -> int:
    return emu.control.counters().get(DL, 0)


def summary(tmp_path: Path, mapping="acme") -> dict:
    conn = open_db(db_path(tmp_path / "state"))
    try:
        return state.summarize(conn, mapping)
    finally:
        conn.close()


def vendor_tree(emu, spec: dict[str, bytes]) -> dict[str, str]:
    """Create nested vendor folders and files; returns relpath -> Box file id."""
    ctl, root = emu.control, emu.folders["download"]
    folders = {"": root}
    ids = {}
    for rel, data in spec.items():
        parts = rel.split("/")
        for i in range(1, len(parts)):
            sub = "/".join(parts[:i])
            if sub not in folders:
                folders[sub] = ctl.vendor_mkdir(folders["/".join(parts[:i - 1])], parts[i - 1])["id"]
        ids[rel] = ctl.vendor_upload(folders["/".join(parts[:-1])], parts[-1], data)["id"]
    return ids


def test_nested_folders_arrive_verified_and_second_pass_fetches_nothing(emulator, tmp_path):
    spec = {"a.jpg": os.urandom(1000), "shoot1/b.tif": os.urandom(300_000),
            "shoot1/retouched/c.psd": os.urandom(2_500_000), "shoot2/d e (final).jpg": b"",
            "shoot2/deep/er/f.png": os.urandom(10)}
    vendor_tree(emulator, spec)
    side = make_side(emulator, tmp_path, file_mode=0o640, dir_mode=0o2750)
    assert side.run_once() is True
    root = tmp_path / "incoming"
    got = local_files(root)
    assert set(got) == set(spec)
    box = emulator.control.files(emulator.folders["download"])
    for rel, data in spec.items():
        assert sha(got[rel]) == box[rel]["sha1"] == sha(data)
    assert temporaries(root) == []
    assert oct((root / "shoot1/b.tif").stat().st_mode & 0o7777) == oct(0o640)
    assert oct((root / "shoot1/retouched").stat().st_mode & 0o7777) == oct(0o2750)
    s = summary(tmp_path)
    assert s["done_today"] == len(spec) and s["failed"] == 0 and s["queued"] == 0

    emulator.control.reset_counters()
    side2 = make_side(emulator, tmp_path)  # a restart: fresh side, same state DB
    assert side2.run_once() is True
    c = emulator.control.counters()
    assert c.get(DL, 0) == 0
    assert set(local_files(root)) == set(spec)
    # one listing call per folder, nothing else but the sign-in
    lists = c.get("GET /2.0/folders/{id}/items", 0)
    assert lists == 6, c
    # even after the studio moved a downloaded file away, it is not fetched again
    (root / "a.jpg").unlink()
    assert side2.run_once() is True
    assert downloads(emulator) == 0 and not (root / "a.jpg").exists()


def test_new_version_refetched_and_local_changes_kept(emulator, tmp_path):
    ctl, dl = emulator.control, emulator.folders["download"]
    root = tmp_path / "incoming"
    root.mkdir()
    (root / "c.jpg").write_bytes(b"the studio's own c.jpg")
    ctl.vendor_upload(dl, "a.jpg", b"a v1")
    ctl.vendor_upload(dl, "b.jpg", b"b v1")
    ctl.vendor_upload(dl, "c.jpg", b"vendor c")
    side = make_side(emulator, tmp_path)
    assert side.run_once() is True
    assert (root / "c.jpg").read_bytes() == b"the studio's own c.jpg"  # never overwritten
    assert (root / "c (2).jpg").read_bytes() == b"vendor c"
    # the studio edits b.jpg; the vendor sends new versions of a and b
    (root / "b.jpg").write_bytes(b"b v1 + studio retouch")
    ctl.vendor_upload(dl, "a.jpg", b"a v2")
    ctl.vendor_upload(dl, "b.jpg", b"b v2")
    ctl.reset_counters()
    assert side.run_once() is True
    assert downloads(emulator) == 2
    assert (root / "a.jpg").read_bytes() == b"a v2"
    assert (root / "b.jpg").read_bytes() == b"b v1 + studio retouch"
    assert (root / "b (2).jpg").read_bytes() == b"b v2"
    # a third version of b replaces our untouched kept-both copy, not the studio's file
    ctl.vendor_upload(dl, "b.jpg", b"b v3")
    assert side.run_once() is True
    assert (root / "b (2).jpg").read_bytes() == b"b v3"
    assert (root / "b.jpg").read_bytes() == b"b v1 + studio retouch"
    assert not (root / "b (3).jpg").exists()
    ctl.reset_counters()
    assert side.run_once() is True
    assert downloads(emulator) == 0  # no loop


@pytest.mark.parametrize("policy", ["skip", "overwrite"])
def test_local_change_policies_skip_and_overwrite(emulator, tmp_path, policy):
    ctl, dl = emulator.control, emulator.folders["download"]
    root = tmp_path / "incoming"
    ctl.vendor_upload(dl, "a.jpg", b"v1")
    side = make_side(emulator, tmp_path, on_local_change=policy)
    assert side.run_once() is True
    (root / "a.jpg").write_bytes(b"studio edit")
    ctl.vendor_upload(dl, "a.jpg", b"v2")
    assert side.run_once() is True
    want = b"studio edit" if policy == "skip" else b"v2"
    assert local_files(root) == {"a.jpg": want}
    ctl.reset_counters()
    assert side.run_once() is True
    assert downloads(emulator) == 0


def test_corrupted_transfer_is_detected_and_retried(emulator, tmp_path):
    ctl, dl = emulator.control, emulator.folders["download"]
    data = os.urandom(200_000)
    ctl.vendor_upload(dl, "x.tif", data)
    ctl.faults(corrupt_download=1.0)
    side = make_side(emulator, tmp_path)
    assert side.run_once() is False
    root = tmp_path / "incoming"
    assert local_files(root) == {}  # nothing under a real name, no temporary
    s = summary(tmp_path)
    assert s["failed"] == 1 and "corrupted" in s["failures"][0]["error"]
    assert downloads(emulator) == 3  # retried within the pass
    ctl.clear_faults()
    # Box's "202 Accepted, Retry-After" right after an upload is retried too
    ctl.settings(download_202=1)
    ctl.vendor_upload(dl, "y.tif", b"fresh")
    assert side.run_once() is True
    assert local_files(root) == {"x.tif": data, "y.tif": b"fresh"}


KILL_SCRIPT = r"""
import json, sys
from cfbox_watch.box_adapter import BoxRemote
from cfbox_watch.config_model import Config, Connection, IncomingMapping
from cfbox_watch.incoming.engine import IncomingSide
p = json.loads(sys.argv[1])
conn = Connection("emu", p["jwt"], p["base"], p["upload"])
m = IncomingMapping(name="acme", connection="emu", folder_id=p["folder"], local=p["local"],
                    key_path="post_production[0]", long_poll=False, after_download=p["after"],
                    archive_folder_id=p.get("archive"))
cfg = Config(path=p["local"] + "/../cfbox.yaml", state_dir=p["state"], connections={"emu": conn}, incoming=(m,))
sys.exit(0 if IncomingSide(cfg, m, BoxRemote.from_connection(conn)).run_once() else 1)
"""


def spawn_once(emu, tmp_path, after="keep"):
    params = {"jwt": str(emu.config_path), "base": emu.base_url, "upload": emu.upload_url,
              "folder": emu.folders["download"], "local": str(tmp_path / "incoming"),
              "state": str(tmp_path / "state"), "after": after, "archive": emu.folders.get("archive")}
    return subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, json.dumps(params)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for(pred, timeout=20.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return None


def test_kill_9_mid_download_then_restart_gives_one_complete_file(emulator, tmp_path):
    ctl, dl = emulator.control, emulator.folders["download"]
    data = os.urandom(3_000_000)
    ctl.vendor_upload(dl, "big.tif", data)
    ctl.faults(bandwidth=400_000)  # bytes/s: the download takes ~7 s
    proc = spawn_once(emulator, tmp_path)
    root = tmp_path / "incoming"

    def partial():
        for dirpath, _, files in os.walk(root):
            for f in files:
                if f.endswith(".cfbox-tmp") and (Path(dirpath) / f).stat().st_size > 100_000:
                    return True
        return False
    try:
        assert wait_for(partial), proc.communicate(timeout=30)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (root / "big.tif").exists()  # no half file under the real name
    assert temporaries(root)  # the killed process left its temporary
    ctl.clear_faults()
    side = make_side(emulator, tmp_path)
    assert side.run_once() is True
    assert local_files(root) == {"big.tif": data}  # exactly one complete file, temporary gone


def test_after_download_trash_only_after_verification(emulator, tmp_path):
    ctl, dl = emulator.control, emulator.folders["download"]
    ctl.vendor_upload(dl, "ok.jpg", b"fine")
    ids = vendor_tree(emulator, {"bad.jpg": os.urandom(5000)})
    ctl.faults(corrupt_download=1.0)
    side = make_side(emulator, tmp_path, after_download="trash")
    assert side.run_once() is False
    # a corrupted file is never trashed on Box
    assert ctl.find(dl, "bad.jpg") is not None and ctl.find(dl, "ok.jpg") is not None
    ctl.clear_faults()
    assert side.run_once() is True
    assert ctl.find(dl, "bad.jpg") is None and ctl.find(dl, "ok.jpg") is None
    assert local_files(tmp_path / "incoming")["ok.jpg"] == b"fine"
    assert ids["bad.jpg"]


def test_after_download_move_keeps_path_and_survives_crash_between_steps(emulator, tmp_path):
    ctl, dl, arch = emulator.control, emulator.folders["download"], emulator.folders["archive"]
    spec = {"s1/a.jpg": b"aaa", "s1/sub/b.jpg": b"bbb", "c.jpg": b"ccc"}
    vendor_tree(emulator, spec)
    # Box refuses the move (as if the process died after placing the files and
    # before the Box action): the state row is left in the intermediate step.
    ctl.faults(error_500=1.0, path_regex=r"^/2\.0/files/[0-9]+$|^/2\.0/folders$")
    side = make_side(emulator, tmp_path, after_download="move", archive_folder_id=arch)
    assert side.run_once() is False
    assert local_files(tmp_path / "incoming") == spec
    assert summary(tmp_path)["after_pending"] == 3
    assert set(ctl.files(dl)) == set(spec)  # still on Box, not moved
    ctl.clear_faults()
    ctl.reset_counters()
    side = make_side(emulator, tmp_path, after_download="move", archive_folder_id=arch)  # restart
    assert side.run_once() is True
    assert downloads(emulator) == 0  # nothing fetched again
    assert set(ctl.files(arch)) == set(spec)  # relative path kept in the archive
    assert ctl.files(dl) == {}
    assert summary(tmp_path)["after_pending"] == 0


def test_after_download_move_after_kill_between_download_and_move(emulator, tmp_path):
    """A real crash: the child is killed while the Box move hangs (latency fault)."""
    ctl, dl, arch = emulator.control, emulator.folders["download"], emulator.folders["archive"]
    ctl.vendor_upload(dl, "a.jpg", b"aaa")
    ctl.faults(latency=30.0, path_regex=r"^/2\.0/files/[0-9]+$")
    proc = spawn_once(emulator, tmp_path, after="move")
    try:
        assert wait_for(lambda: (tmp_path / "incoming" / "a.jpg").exists())
        time.sleep(0.5)  # the move request is in flight now
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    ctl.clear_faults()
    ctl.reset_counters()
    side = make_side(emulator, tmp_path, after_download="move", archive_folder_id=arch)
    assert side.run_once() is True
    assert downloads(emulator) == 0
    assert set(ctl.files(arch)) == {"a.jpg"} and ctl.files(dl) == {}
    assert local_files(tmp_path / "incoming") == {"a.jpg": b"aaa"}


def test_hostile_names_never_escape_incoming(emulator, tmp_path):
    ctl, dl = emulator.control, emulator.folders["download"]
    long_bytes = "é" * 200 + ".jpg"   # 204 characters (Box accepts), 404 bytes (no local FS does)
    sub = ctl.vendor_mkdir(dl, "ü" * 130)["id"]  # folder name over 255 bytes
    ctl.vendor_upload(sub, "inside.jpg", b"x")
    ctl.vendor_upload(dl, long_bytes, b"x")
    ctl.vendor_upload(dl, ".evil.1.cfbox-tmp", b"x")
    ctl.vendor_upload(dl, "... ..", b"dots")  # odd but harmless
    ctl.vendor_upload(dl, "fine.jpg", b"fine")
    before = set(os.listdir(tmp_path))
    side = make_side(emulator, tmp_path)
    assert side.run_once() is False  # rejected items are failures to report
    assert set(os.listdir(tmp_path)) - before == {"incoming", "state"}
    assert local_files(tmp_path / "incoming") == {"fine.jpg": b"fine", "... ..": b"dots"}
    s = summary(tmp_path)
    assert s["failed"] == 3
    reasons = " ".join(f["error"] for f in s["failures"])
    assert "bytes in UTF-8" in reasons and "reserved for download temporaries" in reasons
    # reported once, not re-examined on every listing
    assert side.run_once() is False
    assert summary(tmp_path)["failed"] == 3


def test_nfd_names_one_local_file_no_loop(emulator, tmp_path):
    ctl, dl = emulator.control, emulator.folders["download"]
    nfd = unicodedata.normalize("NFD", "Café.jpg")
    nfc = unicodedata.normalize("NFC", "Café.jpg")
    folder_nfd = unicodedata.normalize("NFD", "Séance")
    sub = ctl.vendor_mkdir(dl, folder_nfd)["id"]
    ctl.vendor_upload(sub, nfd, b"same bytes")
    side = make_side(emulator, tmp_path)
    assert side.run_once() is True
    root = tmp_path / "incoming"
    assert local_files(root) == {f"{unicodedata.normalize('NFC', 'Séance')}/{nfc}": b"same bytes"}
    # the same name in NFC from another vendor machine, identical content: still one file
    ctl.vendor_upload(sub, nfc, b"same bytes")
    ctl.reset_counters()
    assert side.run_once() is True
    assert len(local_files(root)) == 1
    for _ in range(2):  # and no re-download loop
        ctl.reset_counters()
        assert side.run_once() is True
        assert downloads(emulator) == 0


def test_disk_full_clean_error_then_later_success(emulator, tmp_path):
    ctl, dl = emulator.control, emulator.folders["download"]
    root = tmp_path / "incoming"
    root.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(root)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"mounting a 1 MB tmpfs is not permitted here: {r.stderr.strip()}")
    try:
        filler = root / "studio-stuff.bin"
        filler.write_bytes(b"\0" * 600_000)
        data = os.urandom(700_000)
        ctl.vendor_upload(dl, "big.tif", data)
        side = make_side(emulator, tmp_path)
        assert side.run_once() is False
        s = summary(tmp_path)
        assert s["failed"] == 1
        err = s["failures"][0]["error"]
        assert f"cannot write into {root}" in err and "No space left on device" in err
        assert "free space" in err and "Traceback" not in err
        assert sorted(os.listdir(root)) == ["studio-stuff.bin"]  # temporary removed
        filler.unlink()  # the admin frees space
        assert side.run_once() is True
        assert local_files(root) == {"big.tif": data}
    finally:
        subprocess.run(["umount", str(root)], check=False)


def test_events_path_brings_files_within_seconds(emulator, tmp_path):
    """poll_interval is 10 minutes: only the event long-poll can explain a quick arrival,
    including a file in a folder created after the start-up listing."""
    ctl, dl = emulator.control, emulator.folders["download"]
    ctl.settings(longpoll_hold=5)
    side = make_side(emulator, tmp_path, long_poll=True, poll_interval=600.0)
    side.start()
    try:
        assert wait_for(side.ready)
        assert wait_for(lambda: side._events is not None and side._events.batches >= 1, 10)
        root = tmp_path / "incoming"
        t0 = time.monotonic()
        sub = ctl.vendor_mkdir(dl, "new-shoot")["id"]
        ctl.vendor_upload(sub, "n1.jpg", b"n1")
        ctl.vendor_upload(dl, "n2.jpg", b"n2")
        want = {"new-shoot/n1.jpg": b"n1", "n2.jpg": b"n2"}
        assert wait_for(lambda: local_files(root) == want, 15), local_files(root)
        elapsed = time.monotonic() - t0
        assert elapsed < 10, elapsed
        assert local_files(root) == {"new-shoot/n1.jpg": b"n1", "n2.jpg": b"n2"}
        assert side.heartbeat() is True
        assert side.summary()["state"] == "running"
    finally:
        side.request_stop()
        assert side.join(10)
    # the stream position survived in the state DB; a restart continues from there
    conn = open_db(db_path(tmp_path / "state"))
    try:
        assert state.stream_position(conn, "emu:events") not in (None, "")
    finally:
        conn.close()


def test_listing_path_and_a_lost_event(emulator, tmp_path):
    """Events fail completely (as if lost); the listing every poll_interval still
    brings the file."""
    ctl, dl = emulator.control, emulator.folders["download"]
    ctl.faults(error_500=1.0, path_regex=r"^/2\.0/events")
    side = make_side(emulator, tmp_path, long_poll=True, poll_interval=1.0)
    side.start()
    try:
        assert wait_for(side.ready)
        time.sleep(0.5)
        ctl.vendor_upload(dl, "late.jpg", b"late")
        root = tmp_path / "incoming"
        assert wait_for(lambda: (root / "late.jpg").exists(), 10)
        assert (root / "late.jpg").read_bytes() == b"late"
        assert emulator.control.counters().get("GET /2.0/events", 0) >= 1  # events were tried
    finally:
        side.request_stop()
        assert side.join(10)


def test_unshared_download_folder_stops_this_side_with_advice(emulator, tmp_path, caplog):
    side = make_side(emulator, tmp_path, folder_id="987654321")
    assert side.run_once() is False
    s = side.summary()
    assert s["state"] == "error"
    assert "987654321" in s["error"] and "download_folder_id" in s["error"]
    assert "service account" in s["error"]
    assert "Traceback" not in caplog.text


def test_running_side_retries_through_429_and_5xx_storm(emulator, tmp_path):
    """Daemon mode: failed items come back by themselves (backoff, Retry-After), and
    every file arrives exactly once, complete."""
    ctl = emulator.control
    spec = {f"s{i % 3}/f{i}.jpg": os.urandom(3000 + i) for i in range(8)}
    vendor_tree(emulator, spec)
    ctl.faults(rate_429=0.1, error_500=0.1, retry_after=1, corrupt_download=0.15)
    side = make_side(emulator, tmp_path, poll_interval=1.0)
    side.retry_base = 0.2
    root = tmp_path / "incoming"
    side.start()
    try:
        assert wait_for(lambda: local_files(root) == spec, 60), sorted(local_files(root))
        ctl.clear_faults()
        ctl.reset_counters()
        time.sleep(2.5)  # two more listings
        assert downloads(emulator) == 0
        assert ctl.counters().get("GET /2.0/folders/{id}/items", 0) >= 4
        s = summary(tmp_path)
        assert s["failed"] == 0 and s["done_today"] == len(spec)
    finally:
        side.request_stop()
        assert side.join(10)
    assert temporaries(root) == []


def test_local_nfd_file_is_the_same_name(emulator, tmp_path):
    """A studio Mac left NFD-named files in incoming; the vendor's NFC name matches them."""
    ctl, dl = emulator.control, emulator.folders["download"]
    root = tmp_path / "incoming"
    root.mkdir()
    same = unicodedata.normalize("NFD", "Tŕès.jpg")
    other = unicodedata.normalize("NFD", "Ñu.jpg")
    (root / same).write_bytes(b"identical")
    (root / other).write_bytes(b"studio's")
    ctl.vendor_upload(dl, unicodedata.normalize("NFC", "Tŕès.jpg"), b"identical")
    ctl.vendor_upload(dl, unicodedata.normalize("NFC", "Ñu.jpg"), b"vendor's")
    side = make_side(emulator, tmp_path)
    assert side.run_once() is True
    assert downloads(emulator) == 1  # the identical one is adopted, not fetched
    assert local_files(root) == {same: b"identical", other: b"studio's", "Ñu (2).jpg": b"vendor's"}
    ctl.reset_counters()
    assert side.run_once() is True and downloads(emulator) == 0


def test_heartbeat_reports_a_stalled_download_and_recovers(emulator, tmp_path):
    ctl, dl = emulator.control, emulator.folders["download"]
    ctl.vendor_upload(dl, "slow.jpg", b"s" * 1000)
    ctl.faults(latency=4.0, path_regex=r"^/_dl/")  # the content host answers nothing for 4 s
    side = make_side(emulator, tmp_path, poll_interval=600.0)
    side.stall_seconds = 1.0
    side.start()
    try:
        assert side.heartbeat() is True
        assert wait_for(lambda: not side.heartbeat(), 4)  # hung: no byte for over 1 s
        assert wait_for(lambda: (tmp_path / "incoming" / "slow.jpg").exists(), 10)
        assert wait_for(side.heartbeat, 3)  # progress again: healthy
    finally:
        ctl.clear_faults()
        side.request_stop()
        assert side.join(10)


def test_file_trashed_between_listing_and_download_is_dropped(emulator, tmp_path):
    ctl, dl = emulator.control, emulator.folders["download"]
    fid = ctl.vendor_upload(dl, "gone.jpg", b"g")["id"]
    side = make_side(emulator, tmp_path)
    conn = open_db(db_path(tmp_path / "state"))
    try:
        state.ensure(conn)
        assert side.scan(conn) == 1  # queued
        ctl.vendor_trash(fid)
        assert side.run_once() is True
        assert local_files(tmp_path / "incoming") == {}
        assert state.get(conn, "acme", fid) is None
    finally:
        conn.close()


def test_two_mappings_on_one_connection_share_one_event_loop(emulator, tmp_path):
    """One long-poll and one event stream per Box connection, however many incoming
    mappings use it; each mapping still gets its own files within seconds."""
    ctl, dl = emulator.control, emulator.folders["download"]
    ctl.settings(longpoll_hold=5)
    other = ctl.vendor_mkdir(emulator.folders["delivery"], "vendor2")["id"]
    cfg, m1, conn = build(emulator, tmp_path, long_poll=True, poll_interval=600.0)
    _, m2, _ = build(emulator, tmp_path, name="beta", folder_id=other, local=tmp_path / "in2",
                     long_poll=True, poll_interval=600.0)
    remote = BoxRemote.from_connection(conn)
    a, b = IncomingSide(cfg, m1, remote), IncomingSide(cfg, m2, remote)
    a.start()
    b.start()
    try:
        assert a._events is b._events is not None
        assert wait_for(lambda: a._events.batches >= 1, 10)
        ctl.reset_counters()
        ctl.vendor_upload(dl, "for-a.jpg", b"a")
        ctl.vendor_upload(other, "for-b.jpg", b"b")
        assert wait_for(lambda: (tmp_path / "incoming" / "for-a.jpg").exists()
                        and (tmp_path / "in2" / "for-b.jpg").exists(), 15)
        assert not (tmp_path / "in2" / "for-a.jpg").exists()
        c = ctl.counters()
        assert c.get("OPTIONS /2.0/events", 0) <= 1  # not one long-poll per mapping
        assert c.get("GET /_realtime/subscribe", 0) <= 3
    finally:
        a.request_stop()
        b.request_stop()
        assert a.join(10) and b.join(10)

"""The outgoing side end to end: real files, real SQLite, the real box_sdk_gen client
over HTTP against the emulator (fixture `emulator` in conftest.py)."""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cfbox_watch.box_adapter import BoxRemote
from cfbox_watch.config_model import Config, Connection, OutgoingMapping
from cfbox_watch.db import db_path, open_db
from cfbox_watch.outgoing import state
from cfbox_watch.outgoing.engine import OutgoingSide

pytestmark = pytest.mark.timeout(120)


def make_side(emu_info: dict, root: Path, state_dir: Path, *, name: str = "studio",
              folder_id: str | None = None, **kw) -> OutgoingSide:
    # The client-side limiter keeps under Box's 240 uploads/min; the emulator has no
    # such limit unless asked, and tests should not wait for it.
    conn = Connection(name="emu", jwt_config=Path(emu_info["config_path"]),
                      base_url=emu_info["base_url"], upload_url=emu_info["upload_url"],
                      api_calls_per_minute=60_000, uploads_per_minute=60_000)
    kw.setdefault("settle_time", 0.2)
    mapping = OutgoingMapping(name=name, kind="delivery", connection="emu", local=Path(root),
                              folder_id=folder_id or emu_info["folders"]["delivery"],
                              key_path="delivery[0]", **kw)
    config = Config(path=Path(state_dir) / "cfbox.yaml", state_dir=Path(state_dir),
                    connections={"emu": conn}, outgoing=(mapping,))
    return OutgoingSide(config, mapping, BoxRemote.from_connection(conn))


def info(emu) -> dict:
    return {"config_path": str(emu.config_path), "base_url": emu.base_url,
            "upload_url": emu.upload_url, "folders": emu.folders}


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def uploads(counters: dict) -> int:
    """Requests that send file content (direct, versions, session parts)."""
    return sum(v for k, v in counters.items()
               if k.startswith(("POST /api/2.0/files", "PUT /api/2.0/files/upload_sessions")))


def put_parts(counters: dict) -> int:
    return sum(v for k, v in counters.items() if k.startswith("PUT /api/2.0/files/upload_sessions"))


def write(root: Path, rel: str, data: bytes) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def wait_for(pred, timeout=20.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise AssertionError("condition not reached in time")


@pytest.fixture
def env(emulator, tmp_path):
    root = tmp_path / "export"
    root.mkdir()
    return emulator, root, tmp_path / "state"


def test_nested_tree_arrives_with_equal_sha1_and_second_pass_costs_nothing(env, caplog):
    caplog.set_level(logging.DEBUG)
    emu, root, sd = env
    files = {"a.raw": b"A" * 10, "shoot/b.txt": b"bee", "shoot/day 2/c.bin": os.urandom(3000),
             "shoot/day 2/deep/er/d.dat": b"", ".DS_Store": b"junk", "x.tmp": b"temp"}
    for rel, data in files.items():
        write(root, rel, data)
    side = make_side(info(emu), root, sd)
    assert side.run_once() is True
    on_box = emu.control.files(emu.folders["delivery"])
    wanted = {k: v for k, v in files.items() if k not in (".DS_Store", "x.tmp")}
    assert set(on_box) == set(wanted)
    for rel, data in wanted.items():
        assert on_box[rel]["sha1"] == sha1(data)
        assert on_box[rel]["version_count"] == 1
    # one structured line per file, no secret anywhere in the log
    lines = [r for r in caplog.records if getattr(r, "fields", {}).get("ACTION") == "uploaded"]
    assert sorted(r.fields["PATH"] for r in lines) == sorted(wanted)
    for r in lines:
        assert {"MAPPING", "ACTION", "PATH", "BOX_FILE_ID", "SHA1", "SIZE", "DURATION_MS"} <= set(r.fields)
        assert r.fields["SHA1"] == sha1(wanted[r.fields["PATH"]])
    cfg = __import__("json").loads(Path(emu.config_path).read_text())
    app = cfg["boxAppSettings"]
    secrets = [app["clientSecret"], app["appAuth"]["passphrase"]]
    text = "\n".join(r.getMessage() + str(getattr(r, "fields", "")) for r in caplog.records)
    assert not any(sec in text for sec in secrets)
    # second pass, same process: no upload calls at all
    emu.control.reset_counters()
    assert side.run_once() is True
    assert uploads(emu.control.counters()) == 0
    # after a "restart" (new side, same state DB): no hashing and no Box call at all
    emu.control.reset_counters()
    side2 = make_side(info(emu), root, sd)
    assert side2.run_once() is True
    assert side2.remote.calls() == 0
    assert emu.control.counters().get("total", 0) == 0
    s = side2.summary()
    assert s["done_today"] == len(wanted) and s["queued"] == 0 and s["failed"] == 0


def test_changed_file_becomes_one_new_version(env):
    emu, root, sd = env
    p = write(root, "look.jpg", b"\xff\xd8v1\xff\xd9")
    side = make_side(info(emu), root, sd)
    assert side.run_once()
    first = emu.control.find(emu.folders["delivery"], "look.jpg")
    p.write_bytes(b"\xff\xd8version two\xff\xd9")
    assert side.run_once()
    on_box = emu.control.files(emu.folders["delivery"])
    assert list(on_box) == ["look.jpg"]
    assert on_box["look.jpg"]["id"] == first["id"]
    assert on_box["look.jpg"]["version_count"] == 2
    assert on_box["look.jpg"]["sha1"] == sha1(p.read_bytes())
    # touched but not changed: hashed again, but no upload
    os.utime(p, ns=(time.time_ns(), time.time_ns()))
    emu.control.reset_counters()
    assert side.run_once()
    assert uploads(emu.control.counters()) == 0
    assert emu.control.files(emu.folders["delivery"])["look.jpg"]["version_count"] == 2


@pytest.mark.parametrize("size", [100, 2 << 20])   # 409 path and preflight path
def test_same_sha1_already_on_box_is_not_uploaded(env, size):
    emu, root, sd = env
    data = os.urandom(size)
    existing = emu.control.vendor_upload(emu.folders["delivery"], "same.bin", data)
    write(root, "same.bin", data)
    emu.control.reset_counters()
    side = make_side(info(emu), root, sd)
    assert side.run_once()
    on_box = emu.control.files(emu.folders["delivery"])
    assert on_box["same.bin"]["version_count"] == 1 and len(on_box) == 1
    row = state.get(open_db(db_path(sd)), "studio", "same.bin")
    assert row["status"] == "done" and row["box_file_id"] == existing["id"]
    if size > 1 << 20:
        assert uploads(emu.control.counters()) == 0   # the preflight answered


def test_conflict_policies_rename_and_skip(env):
    emu, root, sd = env
    emu.control.vendor_upload(emu.folders["delivery"], "a.txt", b"theirs")
    emu.control.vendor_upload(emu.folders["delivery"], "a (1).txt", b"also theirs")
    write(root, "a.txt", b"ours")
    side = make_side(info(emu), root, sd, on_conflict="rename")
    assert side.run_once()
    on_box = emu.control.files(emu.folders["delivery"])
    assert on_box["a (2).txt"]["sha1"] == sha1(b"ours")
    assert on_box["a.txt"]["sha1"] == sha1(b"theirs")

    root2 = root.parent / "export2"
    write(root2, "b.txt", b"ours")
    emu.control.vendor_upload(emu.folders["delivery"], "b.txt", b"theirs")
    side = make_side(info(emu), root2, root.parent / "state2", name="other", on_conflict="skip")
    assert side.run_once()
    assert emu.control.files(emu.folders["delivery"])["b.txt"]["sha1"] == sha1(b"theirs")
    assert side.summary()["skipped"] == 1


def test_slow_writer_and_temp_then_rename_give_one_upload_each(env):
    emu, root, sd = env
    side = make_side(info(emu), root, sd, settle_time=0.6)
    side.start()
    try:
        wait_for(side.ready)
        emu.control.reset_counters()
        with open(root / "slow.raw", "wb") as f:       # pauses shorter than settle_time
            for i in range(8):
                f.write(b"x" * 1000)
                f.flush()
                time.sleep(0.2)
            # a pause longer than settle_time with the file still open: inotify has
            # seen writes but no close, so the file keeps waiting
            time.sleep(1.2)
            f.write(b"z" * 1000)
            f.flush()
        tmp = root / "render.tif.part"
        with open(tmp, "wb") as f:
            for i in range(5):
                f.write(b"y" * 1000)
                f.flush()
                time.sleep(0.1)
        os.rename(tmp, root / "render.bin")
        on_box = wait_for(lambda: (lambda fs: fs if {"slow.raw", "render.bin"} <= set(fs) else None)(
            emu.control.files(emu.folders["delivery"])))
        time.sleep(1.5)   # anything else would have arrived by now
        on_box = emu.control.files(emu.folders["delivery"])
    finally:
        side.request_stop()
        assert side.join(10)
    assert set(on_box) == {"slow.raw", "render.bin"}
    assert on_box["slow.raw"]["size"] == 9000 and on_box["slow.raw"]["version_count"] == 1
    assert on_box["render.bin"]["size"] == 5000 and on_box["render.bin"]["version_count"] == 1


def test_truncated_image_is_held_until_complete(env):
    emu, root, sd = env
    p = write(root, "cut.jpg", b"\xff\xd8\xff\xe0" + b"\x00" * 100)
    write(root, "fine.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20 + b"\x00\x00\x00\x00IEND\xaeB`\x82")
    side = make_side(info(emu), root, sd)
    assert side.run_once() is False
    on_box = emu.control.files(emu.folders["delivery"])
    assert set(on_box) == {"fine.png"}
    s = side.summary()
    assert s["failed"] == 1 and "JPEG" in s["problems"][0]["error"]
    p.write_bytes(p.read_bytes() + b"\xff\xd9")
    assert side.run_once() is True
    assert set(emu.control.files(emu.folders["delivery"])) == {"fine.png", "cut.jpg"}


def test_bad_names_are_reported_and_others_go_on(env, caplog):
    emu, root, sd = env
    write(root, "ok.txt", b"fine")
    write(root, "trailing .txt ", b"x")
    write(root, "back\\slash.txt", b"x")
    with open(os.fsencode(root) + b"/latin\xe9.txt", "wb") as f:
        f.write(b"x")
    side = make_side(info(emu), root, sd)
    with caplog.at_level(logging.INFO, logger="cfbox_watch"):
        assert side.run_once() is False
    assert set(emu.control.files(emu.folders["delivery"])) == {"ok.txt"}
    problems = {p["path"]: p["error"] for p in side.summary()["problems"]}
    assert set(problems) == {"trailing .txt ", "back\\slash.txt", "latin\\xe9.txt"}
    skipped = [r for r in caplog.records
               if getattr(r, "fields", {}).get("ACTION") == "skipped"]
    assert len(skipped) == 3


def test_symlinks_and_fifos_are_never_followed(env):
    emu, root, sd = env
    outside = root.parent / "private"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"secret")
    (root / "link.txt").symlink_to(outside / "secret.txt")
    (root / "linkdir").symlink_to(outside)
    os.mkfifo(root / "pipe")
    write(root, "real.txt", b"real")
    side = make_side(info(emu), root, sd)
    assert side.run_once() is True
    assert set(emu.control.files(emu.folders["delivery"])) == {"real.txt"}
    # also when the live watch sees them appear
    side.start()
    try:
        wait_for(side.ready)
        (root / "link2.txt").symlink_to(outside / "secret.txt")
        (root / "linkdir2").symlink_to(outside)
        write(root, "real2.txt", b"real2")
        wait_for(lambda: "real2.txt" in emu.control.files(emu.folders["delivery"]))
        time.sleep(0.8)
    finally:
        side.request_stop()
        side.join(10)
    assert set(emu.control.files(emu.folders["delivery"])) == {"real.txt", "real2.txt"}


@pytest.mark.parametrize("after", ["move", "delete"])
def test_after_upload_only_after_verification(env, after):
    emu, root, sd = env
    sent = root.parent / "sent"
    p = write(root, "sub/one.txt", b"one")
    side = make_side(info(emu), root, sd, after_upload=after,
                     sent_dir=sent if after == "move" else None)
    # every upload fails (Box down): the local file must stay where it is
    side.once_max_attempts = 1
    emu.control.faults(error_503=1.0, path_regex=r"^/api/")
    assert side.run_once() is False
    assert p.exists() and not (sent / "sub/one.txt").exists()
    emu.control.clear_faults()
    assert side.run_once() is True
    assert emu.control.files(emu.folders["delivery"])["sub/one.txt"]["sha1"] == sha1(b"one")
    assert not p.exists()
    if after == "move":
        assert (sent / "sub/one.txt").read_bytes() == b"one"
    # the file's absence is not news: nothing more happens
    emu.control.reset_counters()
    assert side.run_once() is True
    assert uploads(emu.control.counters()) == 0


def test_storms_of_429_and_5xx_still_give_every_file_once(env):
    emu, root, sd = env
    expected = {f"f{i:02d}.bin": os.urandom(200 + i) for i in range(24)}
    for rel, data in expected.items():
        write(root, f"d{int(rel[1:3]) % 3}/{rel}", data)
    emu.control.faults(error_500=0.15, error_503=0.1, rate_429=0.1, retry_after=1)
    side = make_side(info(emu), root, sd, workers=4)
    side.retry_base = 0.1
    ok = side.run_once()
    emu.control.clear_faults()
    if not ok:           # `once` gives up after a few tries; the next pass finishes
        assert side.run_once()
    on_box = emu.control.files(emu.folders["delivery"])
    assert len(on_box) == len(expected)
    for rel, node in on_box.items():
        assert node["sha1"] == sha1(expected[rel.split("/")[1]])
        assert node["version_count"] == 1


def test_two_daemons_with_separate_state_send_every_file_once(env):
    emu, root, sd = env
    expected = {f"s{i % 4}/p{i:03d}.dat": os.urandom(100 + i) for i in range(40)}
    for rel, data in expected.items():
        write(root, rel, data)
    sides = [make_side(info(emu), root, root.parent / f"state{i}", workers=3) for i in range(2)]
    results = []
    threads = [threading.Thread(target=lambda s=s: results.append(s.run_once())) for s in sides]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert results == [True, True]
    on_box = emu.control.files(emu.folders["delivery"])
    assert set(on_box) == set(expected)
    assert all(on_box[r]["version_count"] == 1 and on_box[r]["sha1"] == sha1(d)
               for r, d in expected.items())
    assert emu.control.item_count(emu.folders["delivery"]) == len(expected) + 4


def test_setup_error_stops_this_side_with_advice(env):
    emu, root, sd = env
    write(root, "a.txt", b"a")
    side = make_side(info(emu), root, sd, folder_id="987654321")
    assert side.run_once() is False
    s = side.summary()
    assert s["state"] == "failed" and "987654321" in s["error"]
    assert s["queued"] == 1    # the file stays queued for when the admin fixes it


CHILD = r"""
import sys, json
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from test_outgoing_engine import make_side
emu = json.loads(sys.argv[2])
side = make_side(emu, Path(sys.argv[3]), Path(sys.argv[4]), chunked_threshold=1_000_000,
                 part_workers=2)
sys.exit(0 if side.run_once() else 1)
"""


def test_chunked_upload_resumes_after_kill_9(emulator_factory, tmp_path):
    part = 256 * 1024
    emu = emulator_factory("--part-size", str(part), "--chunk-min", "1000000")
    root = tmp_path / "export"
    data = os.urandom(6 * 1024 * 1024 + 12345)         # 25 parts
    write(root, "big/raw.tif.bin", data)
    sd = tmp_path / "state"
    args = [sys.executable, "-c", CHILD, str(Path(__file__).parent), __import__("json").dumps(info(emu)),
            str(root), str(sd)]
    emu.control.faults(bandwidth=600_000, path_regex="upload_sessions")   # ~0.4 s per part
    child = subprocess.Popen(args, cwd=Path(__file__).parents[1])
    try:
        def parts_recorded():
            if not db_path(sd).exists():
                return 0
            try:
                c = open_db(db_path(sd), readonly=True)
                n = c.execute("SELECT COUNT(*) FROM out_parts").fetchone()[0]
                c.close()
                return n >= 6
            except Exception:
                return 0
        wait_for(parts_recorded, timeout=60)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert emu.control.find(emu.folders["delivery"], "big/raw.tif.bin") is None
    emu.control.clear_faults()
    emu.control.reset_counters()
    rc = subprocess.run(args, cwd=Path(__file__).parents[1], timeout=90).returncode
    assert rc == 0
    node = emu.control.files(emu.folders["delivery"])["big/raw.tif.bin"]
    assert node["sha1"] == sha1(data) and node["version_count"] == 1
    total_parts = -(-len(data) // part)
    resent = put_parts(emu.control.counters())
    assert 0 < resent <= total_parts - 6
    assert emu.control.counters().get("POST /api/2.0/files/upload_sessions", 0) == 0  # no new session


def test_live_watch_new_subfolders_moves_in_renames_and_overflow_rescan(env):
    emu, root, sd = env
    outside = root.parent / "elsewhere"
    write(outside, "batch/inner/one.txt", b"one")
    write(outside, "batch/two.txt", b"two")
    side = make_side(info(emu), root, sd, rescan_interval=3600)
    side.start()
    try:
        wait_for(side.ready)
        assert side.summary()["state"] == "running" and side.heartbeat()
        write(root, "new/sub/dir/a.txt", b"a")                 # new nested subfolders
        write(root, ".cache/sub/hidden.txt", b"h")             # excluded folder: never sent
        write(root, "CaptureOne/Cache/x.txt", b"c")
        os.rename(outside / "batch", root / "batch")             # a folder moved in, with files
        write(root, "first.txt", b"name")
        box = lambda: emu.control.files(emu.folders["delivery"])
        wait_for(lambda: {"new/sub/dir/a.txt", "batch/inner/one.txt", "batch/two.txt",
                          "first.txt"} <= set(box()))
        os.rename(root / "first.txt", root / "renamed.txt")       # a rename: the new name arrives
        wait_for(lambda: "renamed.txt" in box())
        # a lost event (inotify queue overflow) is repaired by the rescan it triggers
        side._observer.stop()
        side._observer.join(5)
        write(root, "missed.txt", b"missed")
        time.sleep(0.5)
        assert "missed.txt" not in box()
        logging.getLogger("watchdog.observers.inotify_c").warning(
            "Inotify queue overflowed; filesystem events were lost")
        wait_for(lambda: "missed.txt" in box())
        s = side.summary()
        assert s["queued"] == 0 and s["done_today"] == 6 and s["last_success"]
    finally:
        side.request_stop()
        assert side.join(10)
    on_box = box()
    assert not any(k.startswith((".cache", "CaptureOne")) for k in on_box)
    assert on_box["first.txt"]["sha1"] == on_box["renamed.txt"]["sha1"] == sha1(b"name")
    assert all(n["version_count"] == 1 for n in on_box.values())


def test_poll_mode_sees_new_files(env):
    emu, root, sd = env
    side = make_side(info(emu), root, sd, watch="poll")
    side.poll_interval = 0.3
    side.start()
    try:
        wait_for(side.ready)
        assert side._mode == "poll"
        write(root, "polled/x.txt", b"x")
        wait_for(lambda: "polled/x.txt" in emu.control.files(emu.folders["delivery"]))
    finally:
        side.request_stop()
        assert side.join(10)


def test_chunked_commit_202_and_expired_session_recovery(emulator_factory, tmp_path):
    emu = emulator_factory("--part-size", str(128 * 1024), "--chunk-min", "500000")
    emu.control.settings(commit_202=2)          # Box still assembling: 202 + Retry-After twice
    root = tmp_path / "export"
    data = os.urandom(1_300_000)
    write(root, "a.bin", data)
    side = make_side(info(emu), root, tmp_path / "state", chunked_threshold=500_000)
    assert side.run_once()
    node = emu.control.files(emu.folders["delivery"])["a.bin"]
    assert node["sha1"] == sha1(data)
    c = emu.control.counters()
    assert c.get("POST /api/2.0/files/upload_sessions/{id}/commit", 0) >= 3

    # A recorded session that Box has expired is replaced by a new one (new version).
    emu.control.settings(commit_202=0)
    data2 = os.urandom(1_300_000)
    (root / "a.bin").write_bytes(data2)
    conn = open_db(db_path(tmp_path / "state"))
    from cfbox_watch.outgoing.scanner import stat_file
    from cfbox_watch.outgoing.uploader import Uploader
    st = stat_file(root, "a.bin")
    up = Uploader(side.remote, conn, "studio")
    session, _ = up._session(st, emu.folders["delivery"], "a.bin", node["id"])
    up.remote.upload_part(session.id, data2[:128 * 1024], 0, len(data2))
    emu.control.expire_sessions()
    emu.control.reset_counters()
    assert side.run_once()
    node = emu.control.files(emu.folders["delivery"])["a.bin"]
    assert node["sha1"] == sha1(data2) and node["version_count"] == 2
    assert state.get_session(conn, "studio", "a.bin") is None


def test_names_differing_only_in_case_do_not_overwrite_each_other(env):
    emu, root, sd = env
    write(root, "Look.raw", b"upper")
    side = make_side(info(emu), root, sd)
    assert side.run_once()
    write(root, "look.raw", b"lower")
    assert side.run_once() is False
    on_box = emu.control.files(emu.folders["delivery"])
    assert list(on_box) == ["Look.raw"] and on_box["Look.raw"]["version_count"] == 1
    problems = side.summary()["problems"]
    assert problems[0]["path"] == "look.raw" and "ignore case" in problems[0]["error"]


def test_file_rewritten_during_chunked_upload_is_sent_once_in_its_final_form(emulator_factory, tmp_path):
    emu = emulator_factory("--part-size", str(128 * 1024), "--chunk-min", "500000")
    root = tmp_path / "export"
    p = write(root, "grow.bin", os.urandom(2_000_000))
    final = os.urandom(700_000)
    side = make_side(info(emu), root, tmp_path / "state", chunked_threshold=500_000,
                     part_workers=1)
    emu.control.faults(bandwidth=400_000, path_regex="upload_sessions")
    result = []
    t = threading.Thread(target=lambda: result.append(side.run_once()))
    t.start()

    def parts_recorded():
        try:
            c = open_db(db_path(tmp_path / "state"), readonly=True)
        except Exception:
            return False
        try:
            return c.execute("SELECT COUNT(*) FROM out_parts").fetchone()[0] >= 1
        except Exception:
            return False
        finally:
            c.close()
    wait_for(parts_recorded, timeout=30)
    p.write_bytes(final)          # the exporter rewrites the file, shorter, mid-upload
    emu.control.clear_faults()
    t.join(60)
    assert result == [True]
    on_box = emu.control.files(emu.folders["delivery"])
    assert on_box["grow.bin"]["sha1"] == sha1(final)
    assert on_box["grow.bin"]["version_count"] == 1


def test_once_reports_a_missing_local_folder_and_a_file_that_never_settles(env):
    emu, root, sd = env
    side = make_side(info(emu), root / "missing", sd)
    assert side.run_once() is False
    assert side.summary()["state"] == "failed" and "missing" in side.summary()["error"]

    write(root, "done.txt", b"d")
    side = make_side(info(emu), root, sd, settle_time=0.1)
    stop = threading.Event()

    def appender():
        with open(root / "growing.log", "ab") as f:
            while not stop.is_set():
                f.write(b"line\n")
                f.flush()
                time.sleep(0.02)
    t = threading.Thread(target=appender)
    t.start()
    side.once_settle_limit = 1.5          # default: max(60 s, 10 x settle_time)
    wait_for(lambda: (root / "growing.log").exists())
    try:
        t0 = time.monotonic()
        assert side.run_once() is False
        assert time.monotonic() - t0 < 10
    finally:
        stop.set()
        t.join()
    assert "done.txt" in emu.control.files(emu.folders["delivery"])
    assert "growing.log" not in emu.control.files(emu.folders["delivery"])


def test_periodic_rescan_finds_what_the_watch_missed(env):
    emu, root, sd = env
    side = make_side(info(emu), root, sd, rescan_interval=0.5)
    side.start()
    try:
        wait_for(side.ready)
        side._observer.stop()          # the watch sees nothing from now on
        side._observer.join(5)
        write(root, "quiet/late.txt", b"late")
        wait_for(lambda: "quiet/late.txt" in emu.control.files(emu.folders["delivery"]), timeout=10)
    finally:
        side.request_stop()
        assert side.join(10)


def test_workers_create_each_new_box_folder_once(env):
    """Eight workers uploading into the same new folders: one create call per folder."""
    emu, root, sd = env
    for d in ("job1", "job1/sub", "job2"):
        for i in range(8):
            write(root, f"{d}/f{i}.txt", f"{d}-{i}".encode())
    side = make_side(info(emu), root, sd, workers=8)
    emu.control.reset_counters()
    assert side.run_once() is True
    creates = sum(n for k, n in emu.control.counters().items() if k == "POST /2.0/folders")
    assert creates == 3, emu.control.counters()
    assert len(emu.control.files(emu.folders["delivery"])) == 24


def test_large_upload_shows_progress_in_summary_and_log(emulator_factory, tmp_path, caplog):
    """`status` reads summary()["transfers"]; the journal gets progress lines."""
    from cfbox_watch.progress import Transfers

    caplog.set_level(logging.INFO)
    emu = emulator_factory("--part-size", str(256 * 1024), "--chunk-min", "1000000")
    root, sd = tmp_path / "export", tmp_path / "state"
    data = os.urandom(3 * 1024 * 1024)                              # 12 parts
    write(root, "big.bin", data)
    emu.control.faults(bandwidth=800_000, path_regex="upload_sessions")   # ~4 s in all
    side = make_side(info(emu), root, sd, chunked_threshold=1_000_000, part_workers=2)
    side._transfers = Transfers(min_size=1_000_000, every=0.5)      # "large" for this test
    side.start()
    try:
        seen = wait_for(lambda: [t for t in side.summary()["transfers"]
                                 if t["path"] == "big.bin" and 0 < t["done"] < t["size"]], 30)
        assert seen[0]["size"] == len(data)
        wait_for(lambda: emu.control.find(emu.folders["delivery"], "big.bin"), 60)
        wait_for(lambda: side.summary()["transfers"] == [], 10)
    finally:
        side.request_stop()
        assert side.join(15)
    lines = [r for r in caplog.records if getattr(r, "fields", {}).get("ACTION") == "progress"]
    assert lines and all(r.fields["PATH"] == "big.bin" for r in lines)
    assert "% of 3 MB" in lines[0].getMessage()

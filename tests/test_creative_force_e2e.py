"""The Creative Force External Post workflow against the emulator (issue 8, Tests):
`cfbox-watch once` / `status --json` as real subprocesses, the real box_sdk_gen client
over HTTP, real files and SQLite."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import yaml

from cfbox_watch.creative_force import completion_log as cl

PY = sys.executable
LOG = "{batch}_transfer_completed.log"


def sha(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def write_config(tmp_path: Path, emu, **entry) -> Path:
    root = tmp_path / "studio"
    for d in ("out", "in", "rejected"):
        (root / d).mkdir(parents=True, exist_ok=True)
    e = {"name": "vendor", "connection": "emu", "outgoing": str(root / "out"),
         "upload_folder_id": emu.folders["upload"], "download_folder_id": emu.folders["download"],
         "incoming": str(root / "in"), "check_images": False, "long_poll": False}
    e.update(entry)
    cfg = {"state_dir": str(root / "state"), "settle_time": "0s", "poll_interval": "2s",
           "connections": {"emu": emu.connection()}, "post_production": [e]}
    path = tmp_path / "cfbox.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def once(cfg: Path) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "cfbox_watch", "-c", str(cfg), "once"], capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)


def status(cfg: Path) -> dict:
    p = subprocess.run([PY, "-m", "cfbox_watch", "-c", str(cfg), "status", "--json"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def put(root: Path, rel: str, data: bytes) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)


def box_files(emu, folder_id: str) -> dict[str, dict]:
    return emu.control.files(folder_id)


def test_completion_log_lists_the_batch_and_is_reversioned_when_it_grows(emulator, tmp_path):
    cfg = write_config(tmp_path, emulator, completion_log={"quiet": "0s", "name": LOG})
    out = tmp_path / "studio/out"
    put(out, "P1_OnModel/a.jpg", b"a" * 100)
    put(out, "P1_OnModel/shots/b.tif", b"b" * 200)
    put(out, "loose.jpg", b"loose")
    p = once(cfg)
    assert p.returncode == 0, p.stderr
    assert "ACTION=completed" in p.stderr
    files = box_files(emulator, emulator.folders["upload"])
    name = "P1_OnModel/P1_OnModel_transfer_completed.log"
    assert name in files, sorted(files)
    assert not any(k.endswith(".log") and k != name for k in files)  # loose files: no batch, no log
    log_id = files[name]["id"]
    rows = cl.parse(emulator.control.file_content(log_id))
    on_box = {k[len("P1_OnModel/"):]: v for k, v in files.items()
              if k.startswith("P1_OnModel/") and k != name}
    assert rows == sorted((k, v["size"], v["sha1"]) for k, v in on_box.items())
    assert dict((r[0], r[2]) for r in rows) == {"a.jpg": sha(b"a" * 100),
                                                "shots/b.tif": sha(b"b" * 200)}
    # the log only exists on Box: never in the outgoing folder, never uploaded as a file
    assert not list(out.rglob("*.log"))

    # an unchanged batch is not written again
    p = once(cfg)
    assert p.returncode == 0, p.stderr and "ACTION=completed" not in p.stderr
    assert "ACTION=completed" not in p.stderr

    # the batch grows: a new version of the same Box file lists the new file too
    put(out, "P1_OnModel/c.png", b"c" * 50)
    p = once(cfg)
    assert p.returncode == 0, p.stderr
    files = box_files(emulator, emulator.folders["upload"])
    assert files[name]["id"] == log_id
    rows = cl.parse(emulator.control.file_content(log_id))
    assert [r[0] for r in rows] == ["a.jpg", "c.png", "shots/b.tif"]
    st = status(cfg)
    (rtp,) = st["round_trip"]
    (batch,) = [b for b in rtp["batches"] if b["batch"] == "P1_OnModel"]
    assert batch["completion_log"]["files"] == 3 and batch["completion_log"]["versions"] == 2

    # the vendor took a.jpg away on Box; the next version never lists what is not there
    emulator.control.vendor_move(files["P1_OnModel/a.jpg"]["id"], emulator.folders["archive"])
    put(out, "P1_OnModel/d.png", b"d" * 5)
    assert once(cfg).returncode == 0
    rows = cl.parse(emulator.control.file_content(log_id))
    assert [r[0] for r in rows] == ["c.png", "d.png", "shots/b.tif"]


def test_log_lists_a_renamed_upload_under_its_box_name(emulator, tmp_path):
    ctl = emulator.control
    p1 = ctl.vendor_mkdir(emulator.folders["upload"], "P1")["id"]
    ctl.vendor_upload(p1, "a.jpg", b"the vendor's own")
    cfg = write_config(tmp_path, emulator, on_conflict="rename",
                       completion_log={"quiet": "0s", "name": LOG})
    put(tmp_path / "studio/out", "P1/a.jpg", b"ours")
    p = once(cfg)
    assert p.returncode == 0, p.stderr
    files = box_files(emulator, emulator.folders["upload"])
    rows = cl.parse(ctl.file_content(files["P1/P1_transfer_completed.log"]["id"]))
    assert rows == [("a (1).jpg", 4, sha(b"ours"))]


def test_no_log_while_a_file_is_not_on_box_or_the_batch_is_not_quiet(emulator, tmp_path):
    out = tmp_path / "studio/out"
    put(out, "P1/a.jpg", b"\xff\xd8\xff\xe0 whole \xff\xd9")
    put(out, "P1/broken.jpg", b"\xff\xd8\xff\xe0 truncated")   # held: not a complete JPEG
    cfg = write_config(tmp_path, emulator, check_images=True,
                       completion_log={"quiet": "0s", "name": LOG})
    once(cfg)
    files = box_files(emulator, emulator.folders["upload"])
    assert "P1/a.jpg" in files and "P1/broken.jpg" not in files
    assert not any(k.endswith(".log") for k in files), sorted(files)
    # the export finishes: complete, but not quiet for an hour yet
    put(out, "P1/broken.jpg", b"\xff\xd8\xff\xe0 finished \xff\xd9")
    cfg = write_config(tmp_path, emulator, check_images=True,
                       completion_log={"quiet": "1h", "name": LOG})
    once(cfg)
    files = box_files(emulator, emulator.folders["upload"])
    assert "P1/broken.jpg" in files
    assert not any(k.endswith(".log") for k in files), sorted(files)
    # and once quiet long enough, the log comes
    cfg = write_config(tmp_path, emulator, check_images=True,
                       completion_log={"quiet": "0s", "name": LOG})
    once(cfg)
    files = box_files(emulator, emulator.folders["upload"])
    assert "P1/P1_transfer_completed.log" in files


def test_rejection_round_trip(emulator, tmp_path):
    cfg = write_config(tmp_path, emulator, rejected=str(tmp_path / "studio/rejected"),
                       rejection_folder_id=emulator.folders["rejection"])
    out, rej = tmp_path / "studio/out", tmp_path / "studio/rejected"
    put(out, "P1/a.jpg", b"original")
    assert once(cfg).returncode == 0
    # the vendor returns a.tif
    ctl = emulator.control
    p1 = ctl.vendor_mkdir(emulator.folders["download"], "P1")["id"]
    ctl.vendor_upload(p1, "a.tif", b"retouched v1")
    assert once(cfg).returncode == 0
    (rtp,) = status(cfg)["round_trip"]
    assert (rtp["sent"], rtp["returned"], rtp["outstanding"], rtp["rejected"]) == (1, 1, 0, 0)
    # the studio rejects it: the file goes to the Rejection folder with its path
    put(rej, "P1/a.tif", (tmp_path / "studio/in/P1/a.tif").read_bytes())
    p = once(cfg)
    assert p.returncode == 0, p.stderr
    rejected = box_files(emulator, emulator.folders["rejection"])
    assert set(rejected) == {"P1/a.tif"} and rejected["P1/a.tif"]["sha1"] == sha(b"retouched v1")
    st = status(cfg)
    kinds = {m["name"]: m["kind"] for m in st["mappings"]}
    assert kinds["vendor/rejection"] == "rejection"
    (rtp,) = st["round_trip"]
    assert (rtp["sent"], rtp["returned"], rtp["outstanding"], rtp["rejected"]) == (1, 0, 1, 1)
    text = subprocess.run([PY, "-m", "cfbox_watch", "-c", str(cfg), "status"], capture_output=True,
                          text=True, timeout=60).stdout
    assert "vendor (round trip): 1 sent, 0 returned, 1 outstanding, 1 rejected" in text
    # reworked and returned again (a new version on Box): back, not outstanding
    ctl.vendor_upload(p1, "a.tif", b"retouched v2")
    assert once(cfg).returncode == 0
    (rtp,) = status(cfg)["round_trip"]
    assert (rtp["returned"], rtp["outstanding"], rtp["rejected"]) == (1, 0, 1)


def test_archive_keeps_structure_and_invalid_returns_never_land(emulator, tmp_path):
    ctl = emulator.control
    invalid = ctl.vendor_mkdir(emulator.folders["archive"], "_CF-Invalid-Files")["id"]
    cfg = write_config(tmp_path, emulator, after_download="move",
                       archive_folder_id=emulator.folders["archive"],
                       accept=["*.tif", "*.jpg"], invalid_folder_id=invalid)
    p1 = ctl.vendor_mkdir(emulator.folders["download"], "P1")
    sub = ctl.vendor_mkdir(p1["id"], "looks")
    ctl.vendor_upload(sub["id"], "a.TIF", b"good")
    ctl.vendor_upload(sub["id"], "a.psd", b"wrong format")
    ctl.vendor_upload(emulator.folders["download"], "notes.txt", b"hello")
    p = once(cfg)
    assert p.returncode == 0, p.stderr
    assert "ACTION=invalid" in p.stderr
    local = sorted(str(x.relative_to(tmp_path / "studio/in")) for x in (tmp_path / "studio/in").rglob("*")
                   if x.is_file())
    assert local == ["P1/looks/a.TIF"]
    archive = box_files(emulator, emulator.folders["archive"])
    assert archive["P1/looks/a.TIF"]["sha1"] == sha(b"good")
    assert archive["_CF-Invalid-Files/P1/looks/a.psd"]["sha1"] == sha(b"wrong format")
    assert archive["_CF-Invalid-Files/notes.txt"]["sha1"] == sha(b"hello")
    assert box_files(emulator, emulator.folders["download"]) == {}
    (rtp,) = status(cfg)["round_trip"]
    assert rtp["invalid_returns"] == 2


def test_without_an_invalid_folder_a_refused_return_waits_for_a_rename(emulator, tmp_path):
    ctl = emulator.control
    cfg = write_config(tmp_path, emulator, accept=["*.tif"])
    f = ctl.vendor_upload(emulator.folders["download"], "a.psd", b"psd")
    p = once(cfg)
    assert p.returncode == 1 and "ACTION=invalid" in p.stderr   # reported, counted as failed
    assert not (tmp_path / "studio/in/a.psd").exists()
    assert "a.psd" in box_files(emulator, emulator.folders["download"])
    st = status(cfg)
    (inc,) = [m for m in st["mappings"] if m["direction"] == "in"]
    assert inc["failed"] == 1 and "name not accepted" in inc["problems"][0]["error"]
    assert "not accepted" not in once(cfg).stderr   # told once, not at every listing
    ctl.vendor_rename(f["id"], "a.tif")
    p = once(cfg)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "studio/in/a.tif").read_bytes() == b"psd"


def test_archive_happens_only_after_a_verified_download(emulator, tmp_path):
    ctl = emulator.control
    cfg = write_config(tmp_path, emulator, after_download="move",
                       archive_folder_id=emulator.folders["archive"])
    ctl.faults(corrupt_download=1.0)   # every download arrives with a flipped byte
    try:
        p1 = ctl.vendor_mkdir(emulator.folders["download"], "P1")
        ctl.vendor_upload(p1["id"], "a.tif", b"x" * 1000)
        p = once(cfg)
        assert p.returncode != 0
        assert "P1/a.tif" in box_files(emulator, emulator.folders["download"])
        assert box_files(emulator, emulator.folders["archive"]) == {}
        assert not (tmp_path / "studio/in/P1/a.tif").exists()
    finally:
        ctl.clear_faults()
    assert once(cfg).returncode == 0
    assert "P1/a.tif" in box_files(emulator, emulator.folders["archive"])
    assert (tmp_path / "studio/in/P1/a.tif").read_bytes() == b"x" * 1000


def test_round_trip_counts_and_overdue_survive_restarts(emulator, tmp_path):
    sent_dir = tmp_path / "studio/sent"
    cfg = write_config(tmp_path, emulator, return_due="1ms", after_upload="move",
                       sent=str(sent_dir))
    out = tmp_path / "studio/out"
    put(out, "P1/a.jpg", b"a")
    put(out, "P1/b.jpg", b"b")
    put(out, "P2/c.jpg", b"c")
    ctl = emulator.control
    p = once(cfg)
    assert p.returncode == 0, p.stderr
    # due 1 ms after sending: all three are overdue at once, each told once in the log
    overdue = [line for line in p.stderr.splitlines() if "ACTION=overdue" in line]
    assert sorted(x.split("PATH=")[1].split()[0] for x in overdue) == ["P1/a.jpg", "P1/b.jpg",
                                                                       "P2/c.jpg"]
    p1 = ctl.vendor_mkdir(emulator.folders["download"], "P1")["id"]
    ctl.vendor_upload(p1, "a.tif", b"A")
    ctl.vendor_upload(p1, "a (2).tif", b"A2")        # a duplicate name: still a's return
    ctl.vendor_upload(emulator.folders["download"], "stray.tif", b"?")
    p = once(cfg)
    assert p.returncode == 0, p.stderr
    for _ in range(2):   # restarts: same figures from the state DB; each overdue is told once
        (rtp,) = status(cfg)["round_trip"]
        assert (rtp["sent"], rtp["returned"], rtp["outstanding"], rtp["overdue"],
                rtp["unmatched_returns"]) == (3, 1, 2, 2, 1)
        assert rtp["oldest_outstanding_age"] is not None and rtp["oldest_outstanding_age"] >= 0
        by = {b["batch"]: b for b in rtp["batches"]}
        assert (by["P1"]["returned"], by["P1"]["outstanding"], by["P2"]["outstanding"]) == (1, 1, 1)
        p = once(cfg)
        assert p.returncode == 0, p.stderr
        assert "ACTION=overdue" not in p.stderr
    assert not list(out.rglob("*.jpg"))   # moved to `sent`: the outgoing queue forgot them
    assert len(list(sent_dir.rglob("*.jpg"))) == 3


def test_running_daemon_writes_the_log_and_journals_overdue(emulator, tmp_path):
    """`run` under a (test) journal: the `:cf` Side writes the completion log once the
    batch is quiet, and the overdue warning carries ACTION=overdue as a journal field."""
    import os
    import socket
    import time

    from cfbox_watch.log import decode_journal

    cfg = write_config(tmp_path, emulator, completion_log={"quiet": "1s", "name": LOG},
                       return_due="1s")
    put(tmp_path / "studio/out", "P9/a.jpg", b"a" * 10)
    jpath = Path(f"/tmp/cfbox-cf-{os.getpid()}-{time.monotonic_ns()}.sock")
    journal = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    journal.bind(str(jpath))
    journal.settimeout(0.3)
    err = open(tmp_path / "stderr", "w")
    st = os.fstat(err.fileno())
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    env.update(JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}", CFBOX_JOURNAL_SOCKET=str(jpath))
    proc = subprocess.Popen([PY, "-m", "cfbox_watch", "-c", str(cfg), "run"],
                            stdout=subprocess.DEVNULL, stderr=err, env=env)
    records: list[dict] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                records.append(decode_journal(journal.recv(1 << 20)))
            except socket.timeout:
                pass
            actions = {r.get("ACTION") for r in records}
            if {"completed", "overdue"} <= actions:
                break
        proc.send_signal(15)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        journal.close()
        jpath.unlink(missing_ok=True)
        err.close()
    done = [r for r in records if r.get("ACTION") == "completed"]
    late = [r for r in records if r.get("ACTION") == "overdue"]
    assert done and done[0]["PATH"] == "P9/P9_transfer_completed.log" and done[0]["MAPPING"] == "vendor"
    assert len(late) == 1 and late[0]["PATH"] == "P9/a.jpg" and late[0].get("PRIORITY") == "4"
    files = box_files(emulator, emulator.folders["upload"])
    assert cl.parse(emulator.control.file_content(files["P9/P9_transfer_completed.log"]["id"])) == [
        ("a.jpg", 10, sha(b"a" * 10))]


def test_check_confirms_every_creative_force_folder(emulator, tmp_path):
    ctl = emulator.control
    invalid = ctl.vendor_mkdir(emulator.folders["archive"], "_CF-Invalid-Files")["id"]
    cfg = write_config(tmp_path, emulator, rejected=str(tmp_path / "studio/rejected"),
                       rejection_folder_id=emulator.folders["rejection"], after_download="move",
                       archive_folder_id=emulator.folders["archive"], accept=["*.tif"],
                       invalid_folder_id=invalid, completion_log=True, return_due="2d")
    p = subprocess.run([PY, "-m", "cfbox_watch", "-c", str(cfg), "check"], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert emulator.folders["rejection"] in p.stdout + p.stderr

"""Atomic placement on a real filesystem (the Box side is exercised in test_incoming_e2e)."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from pathlib import Path

import pytest

from cfbox_watch.errors import ItemError
from cfbox_watch.incoming import downloader
from cfbox_watch.incoming.planner import temp_name


def chunks_of(data: bytes, size: int = 1000):
    return lambda: (data[i:i + size] for i in range(0, len(data), size))


def sha(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def test_download_places_verified_file_with_mode(tmp_path):
    data = os.urandom(10_000)
    placed = downloader.download(chunks_of(data), tmp_path, "a.jpg", file_id="7",
                                 expected_sha1=sha(data), expected_size=len(data), replace=False,
                                 file_mode=0o640)
    assert (tmp_path / "a.jpg").read_bytes() == data
    assert placed.sha1 == sha(data) and placed.size == len(data)
    assert stat.S_IMODE((tmp_path / "a.jpg").stat().st_mode) == 0o640
    assert sorted(os.listdir(tmp_path)) == ["a.jpg"]


def test_corruption_is_detected_and_leaves_nothing(tmp_path):
    data = b"x" * 5000
    with pytest.raises(downloader.ChecksumMismatch) as e:
        downloader.download(chunks_of(data), tmp_path, "a.jpg", file_id="7",
                            expected_sha1=sha(b"other"), expected_size=len(data), replace=False)
    assert "corrupted" in str(e.value)
    assert os.listdir(tmp_path) == []


def test_no_clobber_never_replaces_an_existing_file(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"studio's own")
    with pytest.raises(downloader.TargetExists):
        downloader.download(chunks_of(b"vendor"), tmp_path, "a.jpg", file_id="7",
                            expected_sha1=sha(b"vendor"), expected_size=6, replace=False)
    assert (tmp_path / "a.jpg").read_bytes() == b"studio's own"
    assert os.listdir(tmp_path) == ["a.jpg"]
    downloader.download(chunks_of(b"vendor"), tmp_path, "a.jpg", file_id="7",
                        expected_sha1=sha(b"vendor"), expected_size=6, replace=True)
    assert (tmp_path / "a.jpg").read_bytes() == b"vendor"


def test_stream_error_removes_temporary(tmp_path):
    def broken():
        yield b"a" * 100
        raise ConnectionResetError("peer went away")
    with pytest.raises(ConnectionResetError):
        downloader.download(broken, tmp_path, "a.jpg", file_id="7", expected_sha1=None,
                            expected_size=None, replace=False)
    assert os.listdir(tmp_path) == []


def test_stale_temporaries_are_cleaned(tmp_path):
    (tmp_path / "sub").mkdir()
    stale = tmp_path / "sub" / temp_name("a.jpg", "9")
    stale.write_bytes(b"half")
    (tmp_path / "keep.jpg").write_bytes(b"k")
    assert downloader.clean_temporaries(tmp_path) == [stale]
    assert not stale.exists() and (tmp_path / "keep.jpg").exists()


def test_ensure_dirs_mode_and_symlink_escape(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    d = downloader.ensure_dirs(root, ["a", "b"], 0o2750, None)
    assert d == root / "a" / "b"
    assert stat.S_IMODE(d.stat().st_mode) == 0o2750
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (root / "link").symlink_to(outside)
    with pytest.raises(ItemError):
        downloader.ensure_dirs(root, ["link", "x"], 0o755, None)
    assert list(outside.iterdir()) == []


def test_disk_full_is_a_clear_error_naming_the_folder(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.strip()}")
    try:
        data = os.urandom(400_000)
        with pytest.raises(downloader.LocalWriteError) as e:
            downloader.download(chunks_of(data, 64 * 1024), mnt, "big.tif", file_id="7",
                                expected_sha1=sha(data), expected_size=len(data), replace=False)
        msg = str(e.value)
        assert str(mnt) in msg and "No space left" in msg and "retried" in msg
        assert "Traceback" not in msg
        assert os.listdir(mnt) == []  # the temporary is gone, space is free again
        small = b"s" * 1000
        downloader.download(chunks_of(small), mnt, "small.tif", file_id="8",
                            expected_sha1=sha(small), expected_size=len(small), replace=False)
        assert (mnt / "small.tif").read_bytes() == small
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_group_is_applied_and_unknown_group_is_explained(tmp_path):
    import grp
    try:
        g = grp.getgrnam("daemon")
    except KeyError:
        pytest.skip("no 'daemon' group on this machine")
    gid = downloader.resolve_gid("daemon")
    assert gid == g.gr_gid
    d = downloader.ensure_dirs(tmp_path, ["sub"], 0o2775, gid)
    downloader.download(chunks_of(b"x"), d, "a.jpg", file_id="1", expected_sha1=sha(b"x"),
                        expected_size=1, replace=False, gid=gid)
    assert (d / "a.jpg").stat().st_gid == gid and d.stat().st_gid == gid
    with pytest.raises(downloader.LocalWriteError) as e:
        downloader.resolve_gid("no-such-studio-group")
    assert "no-such-studio-group" in str(e.value) and "does not exist" in str(e.value)


def _as_nobody(work: Path, gid) -> subprocess.CompletedProcess:
    import pwd
    import sys
    nobody = pwd.getpwnam("nobody")
    code = (
        "import sys, os\n"
        "from pathlib import Path\n"
        "from cfbox_watch.incoming import downloader\n"
        "os.setgid(%d); os.setgroups([]); os.setuid(%d)\n"
        "try:\n"
        "    downloader.download(lambda: iter([b'x']), Path(%r), 'a.jpg', file_id='1',\n"
        "        expected_sha1=None, expected_size=1, replace=False, gid=%r)\n"
        "except downloader.LocalWriteError as e:\n"
        "    print(e); sys.exit(3)\n"
    ) % (nobody.pw_gid, nobody.pw_uid, str(work), gid)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_permission_denied_names_the_folder(tmp_path):
    import shutil
    import tempfile
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to the 'nobody' user")
    work = Path(tempfile.mkdtemp(dir="/tmp"))
    try:
        os.chmod(work, 0o755)  # root's folder: nobody may not write
        r = _as_nobody(work, None)
        assert r.returncode == 3, r.stderr
        assert f"cannot write into {work}: Permission denied" in r.stdout
        assert "write permission" in r.stdout and "retried" in r.stdout
        assert os.listdir(work) == []
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_group_the_service_user_is_not_in_is_explained(tmp_path):
    """As an unprivileged user (real subprocess), chown to a foreign group fails with
    advice, and the temporary is gone."""
    import grp
    import shutil
    import tempfile
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to the 'nobody' user")
    try:
        gid = grp.getgrnam("daemon").gr_gid
    except KeyError:
        pytest.skip("no 'daemon' group here")
    work = Path(tempfile.mkdtemp(dir="/tmp"))
    try:
        os.chmod(work, 0o777)
        r = _as_nobody(work, gid)
        assert r.returncode == 3, r.stderr
        assert "must be a member of the group" in r.stdout and str(work) in r.stdout
        assert os.listdir(work) == []
    finally:
        shutil.rmtree(work, ignore_errors=True)

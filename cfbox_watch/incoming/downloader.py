"""Atomic download of one Box file into the local tree.

The content is streamed into a hidden temporary next to its final name (same folder,
same filesystem, so the final step is a rename), hashed while it is written, checked
against Box's SHA-1, fsynced, and only then given its real name; then the folder is
fsynced so the rename survives a power cut.  A crash at any point leaves either no
file or the complete one under the real name, plus at worst a temporary that start-up
cleaning removes.

"No clobber" placement uses a hard link (link(2) fails when the name exists), which
closes the window between "is the name free?" and the rename; filesystems without
hard links fall back to a checked rename.
"""

from __future__ import annotations

import errno
import grp
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from cfbox_watch.errors import CfboxError, ItemError
from cfbox_watch.incoming.planner import is_temp_name, temp_name

log = logging.getLogger("cfbox_watch.incoming.downloader")

_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EIO,
                errno.EFBIG, errno.ENAMETOOLONG}


class LocalWriteError(CfboxError):
    """The local disk refused the file (full, read-only, no permission); the item is
    retried later, the message names the folder and what to do."""


class ChecksumMismatch(CfboxError):
    """The bytes received do not hash to Box's SHA-1 (a corrupted transfer); retried."""


class TargetExists(CfboxError):
    """Someone created the final name while we downloaded; the caller plans again."""


@dataclass(frozen=True)
class Placed:
    path: Path
    sha1: str
    size: int
    mtime_ns: int


def disk_advice(err: OSError, folder: Path) -> str:
    """One actionable sentence for a local write failure (no traceback, names the folder)."""
    reason = os.strerror(err.errno) if err.errno else str(err)
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = "free space on that disk (or raise the quota); the file will be retried"
    elif err.errno in (errno.EACCES, errno.EPERM):
        hint = ("give the cfbox-watch service user write permission on that folder; "
                "the file will be retried")
    elif err.errno == errno.EROFS:
        hint = "the file system is mounted read-only; remount it read-write"
    else:
        hint = "the file will be retried"
    return f"cannot write into {folder}: {reason}; {hint}"


def perms_advice(err: OSError, where: Path, mode: int, gid: int | None) -> str:
    reason = os.strerror(err.errno) if err.errno else str(err)
    if gid is not None and err.errno in (errno.EPERM, errno.EACCES):
        return (f"cannot give files in {where} group id {gid} (mode {mode:o}): {reason}; the "
                "cfbox-watch service user must be a member of the group set in 'group'")
    return f"cannot set mode {mode:o} in {where}: {reason}; the file will be retried"


def resolve_gid(group: str | None) -> int | None:
    if group is None:
        return None
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        if group.isdigit():
            return int(group)
        raise LocalWriteError(f"the group {group!r} (incoming mapping setting 'group') does not "
                              "exist on this machine; create it or fix the setting") from None


def _apply_perms(path: Path | int, mode: int, gid: int | None) -> None:
    if isinstance(path, int):
        os.fchmod(path, mode)
        if gid is not None:
            os.fchown(path, -1, gid)
    else:
        os.chmod(path, mode)
        if gid is not None:
            os.chown(path, -1, gid)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_dirs(root: Path, dirparts: Iterable[str], dir_mode: int, gid: int | None) -> Path:
    """Create the vendor's subfolders under `root` with the mapping's mode and group.

    Parts must already be checked (planner.local_parts); a symlink among existing
    folders that leads out of `root` is refused."""
    if not root.is_dir():  # someone removed `incoming` itself while we ran
        try:
            os.makedirs(root, dir_mode, exist_ok=True)
        except OSError as e:
            raise LocalWriteError(disk_advice(e, root.parent)) from None
    path = root
    real_root = root.resolve()
    for part in dirparts:
        path = path / part
        try:
            os.mkdir(path, dir_mode)
        except FileExistsError:
            if not path.is_dir():
                raise TargetExists(f"{path} exists and is not a folder")
        except OSError as e:
            raise LocalWriteError(disk_advice(e, path.parent)) from None
        else:
            try:
                _apply_perms(path, dir_mode, gid)  # mkdir's mode is masked by the umask
            except OSError as e:
                raise LocalWriteError(perms_advice(e, path, dir_mode, gid)) from None
        real = path.resolve()
        if real != real_root and real_root not in real.parents:
            raise ItemError(f"{path} is a link leading outside {root}; refusing to write there")
    return path


def clean_temporaries(root: Path) -> list[Path]:
    """Remove download temporaries a crash left behind (start-up); returns them."""
    removed = []
    if not root.is_dir():
        return removed
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in filenames:
            if is_temp_name(name):
                p = Path(dirpath) / name
                try:
                    p.unlink()
                    removed.append(p)
                except FileNotFoundError:
                    pass
                except OSError as e:
                    log.warning("cannot remove stale temporary %s: %s", p, e.strerror)
    return removed


def _place(tmp: Path, final: Path, replace: bool) -> None:
    if replace:
        os.replace(tmp, final)
        return
    try:
        os.link(tmp, final)
    except FileExistsError:
        raise TargetExists(f"{final} appeared while downloading") from None
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if os.path.lexists(final):  # no hard links here: checked rename (tiny window)
            raise TargetExists(f"{final} appeared while downloading") from None
        os.rename(tmp, final)
        return
    os.unlink(tmp)


def download(
    chunks: Callable[[], Iterable[bytes]],
    dest_dir: Path,
    final_name: str,
    *,
    file_id: str,
    expected_sha1: str | None,
    expected_size: int | None,
    replace: bool,
    file_mode: int = 0o664,
    gid: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Placed:
    """Fetch into `.name.<id>.cfbox-tmp`, verify, fsync, rename to `final_name`.

    `chunks()` opens the Box stream (called once, after the temporary exists so that
    a full disk is noticed before any byte is fetched).  Box errors from the stream
    propagate unchanged; the temporary is always removed on failure.
    """
    tmp = dest_dir / temp_name(final_name, file_id)
    final = dest_dir / final_name
    try:
        tmp.unlink()
    except FileNotFoundError:
        pass
    except OSError as e:
        raise LocalWriteError(disk_advice(e, dest_dir)) from None
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise LocalWriteError(disk_advice(e, dest_dir)) from None
    ok = False
    try:
        h = hashlib.sha1()
        size = 0
        with os.fdopen(fd, "wb", buffering=0, closefd=True) as f:
            for chunk in chunks():
                if not chunk:
                    continue
                h.update(chunk)
                try:
                    view = memoryview(chunk)
                    while view:
                        n = f.write(view)
                        view = view[n:]
                except OSError as e:
                    raise LocalWriteError(disk_advice(e, dest_dir)) from None
                size += len(chunk)
                if progress is not None:
                    progress(size)
            digest = h.hexdigest()
            if expected_sha1 and digest != expected_sha1.lower():
                raise ChecksumMismatch(
                    f"download of {final} was corrupted in transit (SHA-1 {digest}, Box says "
                    f"{expected_sha1.lower()}); it will be fetched again")
            if expected_size is not None and size != expected_size:
                raise ChecksumMismatch(
                    f"download of {final} is {size} bytes, Box says {expected_size}; it will be "
                    "fetched again")
            try:
                _apply_perms(f.fileno(), file_mode, gid)
            except OSError as e:
                raise LocalWriteError(perms_advice(e, dest_dir, file_mode, gid)) from None
            try:
                os.fsync(f.fileno())
            except OSError as e:
                raise LocalWriteError(disk_advice(e, dest_dir)) from None
        try:
            _place(tmp, final, replace)
            fsync_dir(dest_dir)
        except OSError as e:
            raise LocalWriteError(disk_advice(e, dest_dir)) from None
        st = os.stat(final, follow_symlinks=False)
        ok = True
        return Placed(final, digest, size, st.st_mtime_ns)
    finally:
        if not ok:
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass
            except OSError as e:
                log.warning("cannot remove temporary %s: %s", tmp, e.strerror)

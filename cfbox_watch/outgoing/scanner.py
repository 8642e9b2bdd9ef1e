"""Walk a watched root into a snapshot of plain values.

The scan is the authority on what exists (watch events only hint), so it must be
safe on any tree a studio produces: symlinks are never followed (a link could lead
out of the root, or loop), FIFOs/sockets/devices are ignored (opening a FIFO would
block a worker forever), and names that cannot become Box names are reported rather
than crashing the walk.  `scandir` is injectable so tests can simulate races and odd
trees without building them on disk.
"""

from __future__ import annotations

import os
import stat as statmod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from cfbox_watch.outgoing.filters import dir_excluded, file_wanted


@dataclass(frozen=True)
class FileStat:
    relpath: str          # '/'-separated, relative to the root
    size: int
    mtime_ns: int
    inode: int


@dataclass
class Snapshot:
    files: dict[str, FileStat] = field(default_factory=dict)
    # (display relpath, kind, reason): kind is "symlink" | "special" | "badname"
    skipped: list[tuple[str, str, str]] = field(default_factory=list)
    # subtrees that could not be read (permission, vanished): their rows must not be
    # treated as deleted
    unreadable: list[str] = field(default_factory=list)


def display_name(name: str) -> str:
    """A printable, storable form of a name that may hold undecodable bytes."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def stat_file(root: Path, relpath: str) -> FileStat | None:
    """lstat one file; None when it is gone, not a regular file, or a symlink."""
    try:
        st = os.lstat(os.path.join(root, relpath))
    except OSError:
        return None
    if not statmod.S_ISREG(st.st_mode):
        return None
    return FileStat(relpath, st.st_size, st.st_mtime_ns, st.st_ino)


def scan(
    root: Path,
    include: Iterable[str],
    exclude: Iterable[str],
    *,
    start: str = "",
    scandir: Callable[[str], Iterable[os.DirEntry]] = os.scandir,
) -> Snapshot:
    """Snapshot every wanted regular file below `root` (or below `root/start`)."""
    include, exclude = tuple(include), tuple(exclude)
    snap = Snapshot()
    stack = [start.strip("/")]
    while stack:
        reldir = stack.pop()
        absdir = os.path.join(root, reldir) if reldir else str(root)
        try:
            entries = list(scandir(absdir))
        except OSError:
            snap.unreadable.append(reldir)
            continue
        for entry in entries:
            rel = f"{reldir}/{entry.name}" if reldir else entry.name
            try:
                if entry.is_symlink():
                    snap.skipped.append((display_name(rel), "symlink",
                                         "symbolic links are not followed"))
                    continue
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # vanished between listing and stat: the next scan decides
            if statmod.S_ISDIR(st.st_mode):
                if dir_excluded(rel, exclude):
                    continue
                if not _is_utf8(entry.name):
                    snap.skipped.append((display_name(rel), "badname",
                                         "folder name is not valid UTF-8"))
                    continue
                stack.append(rel)
            elif statmod.S_ISREG(st.st_mode):
                if not _is_utf8(entry.name):
                    snap.skipped.append((display_name(rel), "badname",
                                         "file name is not valid UTF-8"))
                    continue
                if file_wanted(rel, include, exclude):
                    snap.files[rel] = FileStat(rel, st.st_size, st.st_mtime_ns, st.st_ino)
            else:
                snap.skipped.append((display_name(rel), "special",
                                     "not a regular file (FIFO, socket or device)"))
    return snap

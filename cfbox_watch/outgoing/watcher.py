"""Watch events as hints, and the choice between inotify and polling.

inotify sees nothing of what another machine writes to an NFS/SMB share, and FUSE
filesystems (sshfs, rclone) often do not deliver events either, so for those
`watch: auto` falls back to watchdog's PollingObserver.  Events never upload
anything: they only tell the engine which path (or subtree) to look at now instead
of at the next rescan.
"""

from __future__ import annotations

import logging
import os
import queue
import re
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler

log = logging.getLogger("cfbox_watch.outgoing.watcher")

# Filesystems where inotify misses changes made elsewhere (or everywhere).
NETWORK_FS = frozenset({
    "nfs", "nfs4", "cifs", "smb", "smb2", "smb3", "smbfs", "sshfs", "fuse", "fuseblk",
    "9p", "afs", "ceph", "glusterfs", "lustre", "davfs", "gpfs", "beegfs", "ncpfs",
    "virtiofs", "vboxsf", "vmhgfs",
})


def _unescape(field: str) -> str:
    # /proc/mounts escapes space, tab, newline and backslash as \ooo octal.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mounts(text: str) -> list[tuple[str, str]]:
    """(mount point, fs type) pairs from /proc/mounts text."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3:
            out.append((_unescape(parts[1]), parts[2]))
    return out


def fs_type_for(path: str, mounts: list[tuple[str, str]]) -> str | None:
    """The fs type of the deepest mount point containing `path` (later mounts win ties)."""
    best, best_len = None, -1
    path = path.rstrip("/") or "/"
    for mnt, fstype in mounts:
        m = mnt.rstrip("/") or "/"
        if path == m or m == "/" or path.startswith(m + "/"):
            if len(m) >= best_len:
                best, best_len = fstype, len(m)
    return best


def is_network_fs(fstype: str | None) -> bool:
    if fstype is None:
        return False
    return fstype in NETWORK_FS or fstype.startswith("fuse.") or fstype.startswith("nfs")


def choose_mode(mode: str, fstype: str | None) -> str:
    """'inotify' or 'poll' for a mapping's `watch` setting and its filesystem."""
    if mode == "poll":
        return "poll"
    if mode == "inotify":
        return "inotify"
    return "poll" if is_network_fs(fstype) else "inotify"


def read_mounts(path: str = "/proc/self/mounts") -> list[tuple[str, str]]:
    # /proc/self/mounts (not /proc/mounts, a symlink into the pid folders) stays readable
    # under systemd's ProcSubset=pid; unreadable means "assume local", never a crash.
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return parse_mounts(f.read())
    except OSError:
        return []


@dataclass(frozen=True)
class Hint:
    relpath: str
    is_dir: bool
    # "write" (modified/created: a writer may still hold it open), "closed" (inotify
    # IN_CLOSE_WRITE: the writer let go), or "" for anything else
    write: str = ""


class HintHandler(FileSystemEventHandler):
    """Turns watchdog events into relative-path hints on a queue.

    Moves hint their destination (a file moved in, a temp file renamed to its final
    name) and their source (so the old row can be dropped); directory events hint the
    whole subtree, which covers folders moved in with files already inside.
    """

    def __init__(self, root: Path, hints: "queue.Queue[Hint]"):
        self.root = os.fsdecode(os.path.abspath(root))
        self.hints = hints

    def _rel(self, p) -> str | None:
        p = os.fsdecode(p)
        if p == self.root:
            return ""
        if not p.startswith(self.root + os.sep):
            return None
        return p[len(self.root) + 1:].replace(os.sep, "/")

    def _put(self, p, is_dir: bool, write: str = "") -> None:
        rel = self._rel(p)
        if rel is not None:
            self.hints.put(Hint(rel, is_dir, write))

    def on_any_event(self, event: FileSystemEvent) -> None:
        # Our own reads (hashing, uploading) open and close files too; those events
        # carry no news and would only feed back into the queue.
        if event.event_type in ("opened", "closed_no_write"):
            return
        # A folder's "modified" only says its listing changed; the created/deleted/moved
        # events of its entries say what changed, so rescanning the folder is waste.
        if event.is_directory and event.event_type == "modified":
            return
        write = ""
        if not event.is_directory:
            # Only a real write means a writer may hold the file open; "created" is
            # also synthesised for files inside a folder that was moved in.
            if event.event_type == "modified":
                write = "write"
            elif event.event_type == "closed":
                write = "closed"
        self._put(event.src_path, event.is_directory, write)
        dest = getattr(event, "dest_path", "")
        if dest:
            self._put(dest, event.is_directory)


class OverflowDetector(logging.Handler):
    """watchdog repairs its own watches after IN_Q_OVERFLOW but drops the lost events
    silently, telling only its logger; this handler turns that log line into a
    rescan request."""

    def __init__(self, callback):
        super().__init__(level=logging.WARNING)
        self.callback = callback

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self.callback()


def make_observer(mode: str, root: Path, handler: HintHandler, poll_interval: float = 2.0):
    if mode == "poll":
        from watchdog.observers.polling import PollingObserver
        obs = PollingObserver(timeout=poll_interval)
    else:
        from watchdog.observers import Observer
        obs = Observer()
    obs.schedule(handler, os.fspath(root), recursive=True)
    obs.daemon = True
    return obs

"""Which files of a tree another process opens or reads, seen through inotify.

The restart figure's goal is "no file hashed again". The daemon's rchar mixes file reads
with its SQLite reads, so the files themselves are watched: IN_OPEN / IN_ACCESS events on
every folder of the tree name each file that was opened or read, by anyone (the
benchmark itself reads nothing there while watching)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import struct
import threading
from pathlib import Path

IN_ACCESS = 0x00000001
IN_OPEN = 0x00000020
IN_ISDIR = 0x40000000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
_EVENT = struct.Struct("iIII")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class AccessWatch:
    """Counts files opened and files read under `root` until stop()."""

    def __init__(self, root: Path):
        self.fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self.dirs: dict[int, str] = {}
        for d, _, _ in os.walk(root):
            wd = _libc.inotify_add_watch(self.fd, os.fsencode(d), IN_ACCESS | IN_OPEN)
            if wd < 0:
                raise OSError(ctypes.get_errno(), f"inotify_add_watch {d} failed (fs.inotify.max_user_watches?)")
            self.dirs[wd] = d
        self.opened: set[str] = set()
        self.read: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            r, _, _ = select.select([self.fd], [], [], 0.2)
            if r:
                self._drain()
        self._drain()

    def _drain(self) -> None:
        while True:
            try:
                buf = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return
            i = 0
            while i + _EVENT.size <= len(buf):
                wd, mask, _cookie, n = _EVENT.unpack_from(buf, i)
                name = buf[i + _EVENT.size:i + _EVENT.size + n].rstrip(b"\0").decode(errors="replace")
                i += _EVENT.size + n
                if mask & IN_ISDIR or not name:
                    continue
                path = f"{self.dirs.get(wd, '?')}/{name}"
                if mask & IN_OPEN:
                    self.opened.add(path)
                if mask & IN_ACCESS:
                    self.read.add(path)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join(5)
        os.close(self.fd)
        return {"files_opened": len(self.opened), "files_read": len(self.read)}

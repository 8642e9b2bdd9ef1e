"""Moving one file's bytes to Box: direct uploads, and chunked sessions we drive ourselves.

The SDK's `upload_big_file` sends parts one by one, forgets the session when the
process dies and breaks on a 202 commit, so large files use the session steps
directly: parts in parallel, every acknowledged part recorded in the state DB, and
on restart the session is resumed from Box's own list of parts.  The whole-file
SHA-1 is computed while the parts are read (once) and sent with the commit, so Box
rejects a corrupted assembly; the caller checks the SHA-1 Box returns.

No retry loop here except the commit's documented 202 + Retry-After; everything
else propagates so the engine retries the whole job with backoff (one retry layer).
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as _dt
import hashlib
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Callable

from cfbox_watch.errors import NotFoundError, RetryableError, SessionExpiredError
from cfbox_watch.outgoing import planner, state
from cfbox_watch.outgoing.scanner import FileStat
from cfbox_watch.progress import Transfers

log = logging.getLogger("cfbox_watch.outgoing.uploader")

READ_BLOCK = 1 << 20
COMMIT_TRIES = 30          # 202 "still assembling" answers before giving the job back
COMMIT_WAIT_CAP = 30.0     # seconds, per Retry-After


class Stopped(Exception):
    """The side is stopping; the job goes back to the queue untouched."""


def content_modified_at(st: FileStat) -> str:
    """RFC 3339 mtime, so Box shows when the photographer exported, not when we sent."""
    t = _dt.datetime.fromtimestamp(st.mtime_ns / 1e9, _dt.timezone.utc).replace(microsecond=0)
    return t.isoformat().replace("+00:00", "Z")


def hash_file(path: str, beat: Callable[[], None] = lambda: None) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while block := f.read(READ_BLOCK):
            h.update(block)
            beat()
    return h.hexdigest()


@dataclass
class ChunkResult:
    item: object          # RemoteItem
    sha1: str
    sent_bytes: int       # part bytes actually sent this time (resume leaves some out)


class Uploader:
    def __init__(self, remote, conn: sqlite3.Connection, mapping: str, *, part_workers: int = 3,
                 stop: threading.Event | None = None, beat: Callable[[], None] = lambda: None,
                 transfers: Transfers | None = None):
        self.transfers = transfers if transfers is not None else Transfers()
        self.remote = remote
        self.conn = conn
        self.mapping = mapping
        self.part_workers = max(1, part_workers)
        self.stop = stop or threading.Event()
        self.beat = beat

    # --- direct ------------------------------------------------------------------
    def direct_new(self, path: str, st: FileStat, parent_id: str, name: str, sha1: str):
        with open(path, "rb") as f:
            return self.remote.upload_file(parent_id, name, f, size=st.size, sha1=sha1,
                                           content_modified_at=content_modified_at(st))

    def direct_version(self, path: str, st: FileStat, file_id: str, sha1: str,
                       if_match: str | None, name: str | None = None):
        with open(path, "rb") as f:
            return self.remote.upload_version(file_id, f, size=st.size, sha1=sha1,
                                              if_match=if_match, name=name,
                                              content_modified_at=content_modified_at(st))

    # --- chunked -----------------------------------------------------------------
    def chunked(self, path: str, st: FileStat, *, parent_id: str, name: str,
                file_id: str | None = None, if_match: str | None = None) -> ChunkResult:
        """Upload through a session, resuming a recorded one for the same file state.

        A new version (file_id given) uses a version session.  A session that Box
        says expired (410) or forgot (404) is replaced once by a fresh one.
        """
        for attempt in (1, 2):
            session, have = self._session(st, parent_id, name, file_id)
            try:
                return self._run_session(path, st, session, have, name=name, parent_id=parent_id,
                                         file_id=file_id, if_match=if_match)
            except (SessionExpiredError, NotFoundError):
                state.drop_session(self.conn, session.id)
                if attempt == 2:
                    raise
                log.info("upload session for %s expired; starting a new one", st.relpath)
        raise AssertionError("unreachable")

    def _session(self, st: FileStat, parent_id: str, name: str, file_id: str | None):
        rec = state.get_session(self.conn, self.mapping, st.relpath)
        if rec is not None:
            same_file = (rec["size"], rec["mtime_ns"], rec["inode"]) == (st.size, st.mtime_ns, st.inode)
            if same_file and rec["file_id"] == file_id:
                try:
                    parts = self.remote.list_parts(rec["session_id"])
                    session = _Session(rec["session_id"], rec["part_size"], rec["total_parts"],
                                       rec["expires_at"])
                    log.info("resuming upload session for %s (%d of %d parts on Box)",
                             st.relpath, len(parts), rec["total_parts"])
                    return session, {(p.offset, p.size): p for p in parts}
                except (SessionExpiredError, NotFoundError):
                    pass
            else:
                self.abort(rec["session_id"])
            state.drop_session(self.conn, rec["session_id"])
        if file_id is not None:
            session = self.remote.create_version_session(file_id, st.size, name=name)
        else:
            session = self.remote.create_upload_session(parent_id, name, st.size)
        state.save_session(self.conn, self.mapping, st.relpath, session, st, file_id)
        return session, {}

    def abort(self, session_id: str) -> None:
        """Best effort: an abandoned session only costs Box storage until it expires."""
        try:
            self.remote.abort_session(session_id)
        except Exception as e:  # noqa: BLE001 - never let clean-up fail a job
            log.debug("could not abort upload session: %s", e.__class__.__name__)

    def abandon(self, relpath: str) -> None:
        rec = state.get_session(self.conn, self.mapping, relpath)
        if rec is not None:
            self.abort(rec["session_id"])
            state.drop_session(self.conn, rec["session_id"])

    def _run_session(self, path, st, session, have, *, name, parent_id, file_id, if_match):
        ranges = planner.part_ranges(st.size, session.part_size)
        done: dict[int, object] = {off: p for (off, n), p in have.items() if (off, n) in ranges}
        whole = hashlib.sha1()
        sent = 0
        pending: set[cf.Future] = set()
        transfer = self.transfers.begin(st.relpath, st.size)

        def record(fut: cf.Future) -> None:
            part = fut.result()
            state.add_part(self.conn, session.id, part.offset, part.size, part.part_id, part.sha1)
            done[part.offset] = part
            self.beat()
            if transfer.update(sum(p.size for p in done.values())):
                log.info("uploading %s: %s", st.relpath, transfer.describe(),
                         extra={"fields": {"MAPPING": self.mapping, "ACTION": "progress",
                                           "PATH": st.relpath}})

        with transfer, open(path, "rb") as f, cf.ThreadPoolExecutor(self.part_workers,
                                                         thread_name_prefix="cfbox-part") as pool:
            try:
                for off, n in ranges:
                    if self.stop.is_set():
                        raise Stopped()
                    f.seek(off)
                    data = f.read(n)
                    if len(data) != n:
                        raise FileChanged()
                    whole.update(data)
                    self.beat()
                    if off in done:
                        continue
                    pending.add(pool.submit(self.remote.upload_part, session.id, data, off, st.size))
                    sent += n
                    while len(pending) >= self.part_workers:
                        finished, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                        for fut in finished:
                            record(fut)
                finished, pending = cf.wait(pending)
                for fut in finished:
                    record(fut)
            except BaseException:
                for fut in pending:
                    fut.cancel()
                # parts already in flight may still land; record those that did
                for fut in pending:
                    if fut.done() and not fut.cancelled() and fut.exception() is None:
                        record(fut)
                raise
        sha1 = whole.hexdigest()
        if _replaced_since(path, st):
            raise FileChanged()
        parts = [done[off] for off, _ in ranges]
        item = self._commit(session.id, parts, sha1=sha1, name=name,
                            parent_id=None if file_id else parent_id, if_match=if_match,
                            cma=content_modified_at(st))
        state.drop_session(self.conn, session.id)
        return ChunkResult(item, sha1, sent)

    def _commit(self, session_id, parts, *, sha1, name, parent_id, if_match, cma):
        for attempt in range(COMMIT_TRIES):
            try:
                return self.remote.commit_session(session_id, parts, sha1=sha1, name=name,
                                                  parent_id=parent_id, if_match=if_match,
                                                  content_modified_at=cma)
            except RetryableError as e:
                if attempt == COMMIT_TRIES - 1:
                    raise
                wait = min(COMMIT_WAIT_CAP, e.retry_after if e.retry_after else 1.0 + attempt)
                self.beat()
                if self.stop.wait(wait):
                    raise Stopped() from None
        raise AssertionError("unreachable")


@dataclass(frozen=True)
class _Session:
    id: str
    part_size: int
    total_parts: int
    expires_at: str | None


def _replaced_since(path, st: FileStat) -> bool:
    """The path now names other bytes than the ones just sent (rewritten, replaced by a
    rename, or deleted): reading through the open descriptor cannot see a rename, and
    committing would put superseded content on Box as a version of its own."""
    try:
        now = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return True
    return (now.st_size, now.st_mtime_ns, now.st_ino) != (st.size, st.mtime_ns, st.inode)


class FileChanged(Exception):
    """The file got shorter while we read it: not a failure, it is being rewritten."""

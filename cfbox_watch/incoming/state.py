"""The incoming side's tables in the shared state DB.

One row per (mapping, Box file id) is the work queue and the memory of what was
placed where: which Box content we placed, at which local path, with which size and
mtime (to notice a studio edit), and how far the after-download Box action got.  The
event stream position and the ids of events already handled live here too, so a
restart neither replays work nor misses changes made while the daemon was down.

Every state change is one transaction (`db.transaction`).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable, Sequence

from cfbox_watch.db import ensure_schema, transaction
from cfbox_watch.incoming.planner import Record, RemoteFile

COMPONENT = "incoming"

MIGRATIONS = [
    """
    CREATE TABLE in_files (
        mapping TEXT NOT NULL,
        file_id TEXT NOT NULL,
        box_path TEXT NOT NULL,
        parent_id TEXT,
        remote_sha1 TEXT,
        remote_version TEXT,
        remote_size INTEGER,
        status TEXT NOT NULL,
        relpath TEXT,
        sha1 TEXT,
        version_id TEXT,
        size INTEGER,
        local_size INTEGER,
        local_mtime_ns INTEGER,
        seen_sha1 TEXT,
        seen_version TEXT,
        after_state TEXT NOT NULL DEFAULT 'none',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt REAL NOT NULL DEFAULT 0,
        last_error TEXT,
        updated_at REAL,
        done_at REAL,
        PRIMARY KEY (mapping, file_id)
    );
    CREATE INDEX in_files_queue ON in_files(mapping, status, next_attempt);
    CREATE INDEX in_files_after ON in_files(mapping, after_state);
    CREATE TABLE in_folders (
        mapping TEXT NOT NULL,
        folder_id TEXT NOT NULL,
        relpath TEXT NOT NULL,
        parent_id TEXT,
        etag TEXT,
        modified_at TEXT,
        listed_at REAL,
        PRIMARY KEY (mapping, folder_id)
    );
    CREATE TABLE in_event_streams (
        stream_key TEXT PRIMARY KEY,
        position TEXT NOT NULL,
        updated_at REAL
    );
    CREATE TABLE in_seen_events (
        stream_key TEXT NOT NULL,
        event_id TEXT NOT NULL,
        seen_at REAL NOT NULL,
        PRIMARY KEY (stream_key, event_id)
    )
    """,
]

# Statuses: pending (queued), active (a worker holds it), done (placed, or adopted),
# failed (retried at next_attempt), skipped (policy kept the local edit), rejected
# (unsafe name; looked at again only when renamed on Box), invalid (name not in `accept`,
# moved into invalid_folder_id; docs/creative-force.md).
QUEUED = ("pending", "failed")


def ensure(conn: sqlite3.Connection) -> None:
    ensure_schema(conn, COMPONENT, MIGRATIONS)


@dataclass(frozen=True)
class Row:
    mapping: str
    file_id: str
    box_path: str
    parent_id: str | None
    remote_sha1: str | None
    remote_version: str | None
    remote_size: int | None
    status: str
    relpath: str | None
    sha1: str | None
    version_id: str | None
    size: int | None
    local_size: int | None
    local_mtime_ns: int | None
    seen_sha1: str | None
    seen_version: str | None
    after_state: str
    attempts: int
    next_attempt: float
    last_error: str | None
    updated_at: float | None
    done_at: float | None

    def record(self) -> Record:
        return Record(
            file_id=self.file_id, status=self.status, box_path=self.box_path,
            relpath=self.relpath, sha1=self.sha1, local_size=self.local_size,
            local_mtime_ns=self.local_mtime_ns, seen_sha1=self.seen_sha1,
            seen_version=self.seen_version,
        )

    def remote(self) -> RemoteFile:
        return RemoteFile(
            file_id=self.file_id, box_path=tuple(self.box_path.split("/")),
            sha1=self.remote_sha1, version_id=self.remote_version, size=self.remote_size,
            parent_id=self.parent_id,
        )


def _row(r: sqlite3.Row | None) -> Row | None:
    return Row(**dict(r)) if r is not None else None


def get(conn: sqlite3.Connection, mapping: str, file_id: str) -> Row | None:
    return _row(conn.execute(
        "SELECT * FROM in_files WHERE mapping=? AND file_id=?", (mapping, file_id)).fetchone())


def all_rows(conn: sqlite3.Connection, mapping: str) -> list[Row]:
    return [Row(**dict(r)) for r in conn.execute(
        "SELECT * FROM in_files WHERE mapping=? ORDER BY box_path", (mapping,))]


def records(conn: sqlite3.Connection, mapping: str) -> dict[str, Record]:
    return {r.file_id: r.record() for r in all_rows(conn, mapping)}


# The listing's snapshot may be older than a worker's result: a row that reached
# done/skipped for exactly this Box content must stay so (planner.content_key in SQL).
_SAME = ("COALESCE(LOWER(in_files.seen_sha1), 'v:' || in_files.seen_version, '') = "
         "COALESCE(LOWER(excluded.remote_sha1), 'v:' || excluded.remote_version, '')")


def enqueue(conn: sqlite3.Connection, mapping: str, remote: RemoteFile, now: float | None = None) -> None:
    """Queue (or refresh the wanted version of) one Box file; an active row keeps its
    status so a running worker is not disturbed, a failed row keeps its backoff."""
    now = time.time() if now is None else now
    path = "/".join(remote.box_path)
    with transaction(conn):
        conn.execute(
            """INSERT INTO in_files(mapping, file_id, box_path, parent_id, remote_sha1,
                   remote_version, remote_size, status, updated_at)
               VALUES(?,?,?,?,?,?,?, 'pending', ?)
               ON CONFLICT(mapping, file_id) DO UPDATE SET
                   box_path=excluded.box_path, parent_id=excluded.parent_id,
                   remote_sha1=excluded.remote_sha1, remote_version=excluded.remote_version,
                   remote_size=excluded.remote_size, updated_at=excluded.updated_at,
                   status=CASE WHEN in_files.status IN ('active','failed') THEN in_files.status
                               WHEN in_files.status IN ('done','skipped') AND """ + _SAME + """
                                   THEN in_files.status
                               ELSE 'pending' END,
                   attempts=CASE WHEN in_files.status IN ('active','failed') THEN in_files.attempts
                                 WHEN in_files.status IN ('done','skipped') AND """ + _SAME + """
                                     THEN in_files.attempts
                                 ELSE 0 END""",
            (mapping, remote.file_id, path, remote.parent_id, remote.sha1, remote.version_id,
             remote.size, now),
        )


def note_seen(conn: sqlite3.Connection, mapping: str, remote: RemoteFile) -> None:
    """Keep the Box path of a done file current (used for move-to-archive paths)."""
    with transaction(conn):
        conn.execute(
            "UPDATE in_files SET box_path=?, parent_id=? WHERE mapping=? AND file_id=? "
            "AND (box_path IS NOT ? OR parent_id IS NOT ?)",
            ("/".join(remote.box_path), remote.parent_id, mapping, remote.file_id,
             "/".join(remote.box_path), remote.parent_id),
        )


def reject(conn: sqlite3.Connection, mapping: str, remote: RemoteFile, reason: str,
           status: str = "rejected") -> None:
    """`rejected`: not taken, waits for a rename on Box (counts as failed);
    `invalid`: a non-accepted return already moved to the invalid-files folder (done with)."""
    now = time.time()
    with transaction(conn):
        conn.execute(
            """INSERT INTO in_files(mapping, file_id, box_path, parent_id, remote_sha1,
                   remote_version, remote_size, status, seen_sha1, seen_version, last_error,
                   updated_at)
               VALUES(?,?,?,?,?,?,?,?, ?, ?, ?, ?)
               ON CONFLICT(mapping, file_id) DO UPDATE SET
                   box_path=excluded.box_path, parent_id=excluded.parent_id,
                   remote_sha1=excluded.remote_sha1, remote_version=excluded.remote_version,
                   remote_size=excluded.remote_size, status=excluded.status,
                   seen_sha1=excluded.seen_sha1, seen_version=excluded.seen_version,
                   last_error=excluded.last_error, updated_at=excluded.updated_at""",
            (mapping, remote.file_id, "/".join(remote.box_path), remote.parent_id, remote.sha1,
             remote.version_id, remote.size, status, remote.sha1, remote.version_id, reason, now),
        )


def reset_active(conn: sqlite3.Connection, mapping: str) -> int:
    """After a crash nothing is really active: give those rows back to the queue."""
    with transaction(conn):
        return conn.execute(
            "UPDATE in_files SET status='pending' WHERE mapping=? AND status='active'", (mapping,)
        ).rowcount


def due(conn: sqlite3.Connection, mapping: str, now: float | None, limit: int = 1000) -> list[str]:
    """File ids ready for a worker; `now=None` means every queued row (the `once` pass)."""
    if now is None:
        q = conn.execute(
            "SELECT file_id FROM in_files WHERE mapping=? AND status IN ('pending','failed') "
            "ORDER BY next_attempt, box_path LIMIT ?", (mapping, limit))
    else:
        q = conn.execute(
            "SELECT file_id FROM in_files WHERE mapping=? AND status IN ('pending','failed') "
            "AND next_attempt<=? ORDER BY next_attempt, box_path LIMIT ?", (mapping, now, limit))
    return [r[0] for r in q]


def next_due_time(conn: sqlite3.Connection, mapping: str) -> float | None:
    r = conn.execute(
        "SELECT MIN(next_attempt) FROM in_files WHERE mapping=? AND status IN ('pending','failed')",
        (mapping,)).fetchone()
    return r[0] if r and r[0] is not None else None


def claim(conn: sqlite3.Connection, mapping: str, file_id: str) -> Row | None:
    """Take one queued row for this worker (BEGIN IMMEDIATE: never two claimants)."""
    with transaction(conn):
        r = conn.execute(
            "SELECT * FROM in_files WHERE mapping=? AND file_id=? AND status IN ('pending','failed')",
            (mapping, file_id)).fetchone()
        if r is None:
            return None
        conn.execute(
            "UPDATE in_files SET status='active', attempts=attempts+1, updated_at=? "
            "WHERE mapping=? AND file_id=?", (time.time(), mapping, file_id))
    row = _row(r)
    return Row(**{**row.__dict__, "status": "active", "attempts": row.attempts + 1})


def mark_placed(conn: sqlite3.Connection, mapping: str, file_id: str, *, relpath: str,
                sha1: str | None, version_id: str | None, size: int, local_size: int,
                local_mtime_ns: int, after_pending: bool) -> None:
    """The local file is verified and in place; remember it, and whether the Box action
    (trash/move) is still owed, in the same transaction."""
    now = time.time()
    with transaction(conn):
        conn.execute(
            """UPDATE in_files SET status='done', relpath=?, sha1=?, version_id=?, size=?,
                   local_size=?, local_mtime_ns=?, seen_sha1=?, seen_version=?,
                   after_state=?, last_error=NULL, next_attempt=0, updated_at=?, done_at=?
               WHERE mapping=? AND file_id=?""",
            (relpath, sha1, version_id, size, local_size, local_mtime_ns, sha1, version_id,
             "pending" if after_pending else "none", now, now, mapping, file_id),
        )


def mark_skipped(conn: sqlite3.Connection, mapping: str, file_id: str, *, sha1: str | None,
                 version_id: str | None, reason: str) -> None:
    with transaction(conn):
        conn.execute(
            "UPDATE in_files SET status='skipped', seen_sha1=?, seen_version=?, last_error=?, "
            "updated_at=? WHERE mapping=? AND file_id=?",
            (sha1, version_id, reason, time.time(), mapping, file_id))


def mark_failed(conn: sqlite3.Connection, mapping: str, file_id: str, error: str,
                next_attempt: float) -> None:
    with transaction(conn):
        conn.execute(
            "UPDATE in_files SET status='failed', last_error=?, next_attempt=?, updated_at=? "
            "WHERE mapping=? AND file_id=?",
            (error, next_attempt, time.time(), mapping, file_id))


def mark_gone(conn: sqlite3.Connection, mapping: str, file_id: str) -> None:
    """The Box file vanished before we fetched it: nothing to do any more."""
    with transaction(conn):
        conn.execute(
            "DELETE FROM in_files WHERE mapping=? AND file_id=? AND status IN ('pending','active','failed') "
            "AND relpath IS NULL", (mapping, file_id))
        conn.execute(
            "UPDATE in_files SET status='done', last_error=NULL WHERE mapping=? AND file_id=? "
            "AND status IN ('pending','active','failed')", (mapping, file_id))


def after_pending(conn: sqlite3.Connection, mapping: str) -> list[Row]:
    return [Row(**dict(r)) for r in conn.execute(
        "SELECT * FROM in_files WHERE mapping=? AND after_state='pending' ORDER BY box_path",
        (mapping,))]


def mark_after(conn: sqlite3.Connection, mapping: str, file_id: str, state: str,
               error: str | None = None) -> None:
    with transaction(conn):
        conn.execute(
            "UPDATE in_files SET after_state=?, last_error=?, updated_at=? WHERE mapping=? AND file_id=?",
            (state, error, time.time(), mapping, file_id))


def relpath_owners(conn: sqlite3.Connection, mapping: str) -> dict[str, str]:
    return {r[0]: r[1] for r in conn.execute(
        "SELECT relpath, file_id FROM in_files WHERE mapping=? AND relpath IS NOT NULL", (mapping,))}


# -- folders -----------------------------------------------------------------------

def save_folders(conn: sqlite3.Connection, mapping: str,
                 folders: Iterable[tuple[str, str, str | None, str | None, str | None]],
                 *, replace_under: str | None = None) -> None:
    """Record the folders of one walk: (folder_id, relpath, parent_id, etag, modified_at).
    `replace_under` (a relpath, "" for the root) drops the folders below it first, so a
    folder moved away from the tree stops counting as watched."""
    now = time.time()
    with transaction(conn):
        if replace_under is not None:
            if replace_under == "":
                conn.execute("DELETE FROM in_folders WHERE mapping=?", (mapping,))
            else:
                conn.execute(
                    "DELETE FROM in_folders WHERE mapping=? AND (relpath=? OR relpath LIKE ? ESCAPE '\\')",
                    (mapping, replace_under, _like_prefix(replace_under)))
        conn.executemany(
            "INSERT INTO in_folders(mapping, folder_id, relpath, parent_id, etag, modified_at, listed_at) "
            "VALUES(?,?,?,?,?,?,?) ON CONFLICT(mapping, folder_id) DO UPDATE SET relpath=excluded.relpath, "
            "parent_id=excluded.parent_id, etag=excluded.etag, modified_at=excluded.modified_at, "
            "listed_at=excluded.listed_at",
            [(mapping, fid, rel, pid, etag, mod, now) for fid, rel, pid, etag, mod in folders])


def _like_prefix(relpath: str) -> str:
    esc = relpath.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return esc + "/%"


def folder_paths(conn: sqlite3.Connection, mapping: str) -> dict[str, str]:
    """folder_id -> relpath ("" for the Download folder itself) of the known tree."""
    return {r[0]: r[1] for r in conn.execute(
        "SELECT folder_id, relpath FROM in_folders WHERE mapping=?", (mapping,))}


# -- event stream ------------------------------------------------------------------

def stream_position(conn: sqlite3.Connection, key: str) -> str | None:
    r = conn.execute("SELECT position FROM in_event_streams WHERE stream_key=?", (key,)).fetchone()
    return r[0] if r else None


def save_stream(conn: sqlite3.Connection, key: str, position: str,
                event_ids: Sequence[str] = (), keep_seconds: float = 7 * 86400) -> None:
    """Persist the new position and the handled event ids together (one transaction),
    and forget ids older than Box keeps repeating them."""
    now = time.time()
    with transaction(conn):
        conn.execute(
            "INSERT INTO in_event_streams(stream_key, position, updated_at) VALUES(?,?,?) "
            "ON CONFLICT(stream_key) DO UPDATE SET position=excluded.position, updated_at=excluded.updated_at",
            (key, position, now))
        conn.executemany(
            "INSERT OR IGNORE INTO in_seen_events(stream_key, event_id, seen_at) VALUES(?,?,?)",
            [(key, e, now) for e in event_ids])
        conn.execute("DELETE FROM in_seen_events WHERE stream_key=? AND seen_at<?",
                     (key, now - keep_seconds))


def unseen(conn: sqlite3.Connection, key: str, event_ids: Sequence[str]) -> set[str]:
    if not event_ids:
        return set()
    seen = set()
    ids = list(event_ids)
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        q = ",".join("?" * len(chunk))
        seen.update(r[0] for r in conn.execute(
            f"SELECT event_id FROM in_seen_events WHERE stream_key=? AND event_id IN ({q})",
            (key, *chunk)))
    return set(ids) - seen


# -- status / retry (used by cfbox_watch.status) -------------------------------------

def _has_tables(conn: sqlite3.Connection) -> bool:
    return conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name='in_files'").fetchone() is not None


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


def summarize(conn: sqlite3.Connection, mapping: str, now: float | None = None) -> dict:
    """Counts for `status` and the Side summary: queued, active, failed (with reasons),
    done_today (local day), last_success (ISO-8601 UTC).  Works on a read-only
    connection and on a DB where the incoming side never ran."""
    out = {"queued": 0, "active": 0, "failed": 0, "done_today": 0, "last_success": None,
           "failures": [], "after_pending": 0}
    if not _has_tables(conn):
        return out
    now = time.time() if now is None else now
    lt = time.localtime(now)
    midnight = time.mktime((lt.tm_year, lt.tm_mon, lt.tm_mday, 0, 0, 0, 0, 0, -1))
    for status, n in conn.execute(
            "SELECT status, COUNT(*) FROM in_files WHERE mapping=? GROUP BY status", (mapping,)):
        if status == "pending":
            out["queued"] += n
        elif status == "active":
            out["active"] += n
        elif status in ("failed", "rejected"):
            out["failed"] += n
    r = conn.execute(
        "SELECT COUNT(*), MAX(done_at) FROM in_files WHERE mapping=? AND status='done' AND done_at>=?",
        (mapping, midnight)).fetchone()
    out["done_today"] = r[0]
    last = conn.execute("SELECT MAX(done_at) FROM in_files WHERE mapping=? AND status='done'",
                        (mapping,)).fetchone()[0]
    out["last_success"] = _iso(last)
    out["after_pending"] = conn.execute(
        "SELECT COUNT(*) FROM in_files WHERE mapping=? AND after_state='pending'", (mapping,)).fetchone()[0]
    for r in conn.execute(
            "SELECT box_path, relpath, file_id, status, last_error, attempts, next_attempt FROM in_files "
            "WHERE mapping=? AND status IN ('failed','rejected') ORDER BY box_path LIMIT 50", (mapping,)):
        out["failures"].append({
            "path": r["relpath"] or r["box_path"], "box_file_id": r["file_id"],
            "status": r["status"], "error": r["last_error"], "attempts": r["attempts"],
            "next_attempt": _iso(r["next_attempt"]) if r["status"] == "failed" else None,
        })
    return out


def requeue_failed(conn: sqlite3.Connection, mapping: str | None = None,
                   paths: Sequence[str] = ()) -> int:
    """Make failed rows due now (and rejected rows looked at again); returns how many.
    `paths` match a row's Box path or its local relpath."""
    if not _has_tables(conn):
        return 0
    sql = ("UPDATE in_files SET status=CASE WHEN status='rejected' THEN 'pending' ELSE status END, "
           "seen_sha1=CASE WHEN status='rejected' THEN NULL ELSE seen_sha1 END, "
           "next_attempt=0, attempts=0 WHERE status IN ('failed','rejected')")
    args: list = []
    if mapping is not None:
        sql += " AND mapping=?"
        args.append(mapping)
    if paths:
        q = ",".join("?" * len(paths))
        sql += f" AND (box_path IN ({q}) OR relpath IN ({q}))"
        args.extend(paths)
        args.extend(paths)
    with transaction(conn):
        return conn.execute(sql, args).rowcount

"""The outgoing side's tables in the shared state DB, and every queue transition.

One function is one transaction (`db.transaction`, BEGIN IMMEDIATE), so a crash at
any point leaves a consistent queue and two worker threads (or two processes on the
same DB) never claim the same row.  The read-decide-write steps call the pure
planner inside the transaction so that the decision is made on the row as it is.

`summarize` and `requeue_failed` are the entry points for `cfbox-watch status` and
`cfbox-watch retry`, which run on their own connection.
"""

from __future__ import annotations

import datetime as _dt
import sqlite3
import time
from typing import Iterable, Sequence

from cfbox_watch.db import ensure_schema, transaction
from cfbox_watch.outgoing import planner
from cfbox_watch.outgoing.scanner import FileStat

COMPONENT = "outgoing"

MIGRATIONS: list[str] = [
    """
    CREATE TABLE out_files (
        mapping TEXT NOT NULL,
        relpath TEXT NOT NULL,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        inode INTEGER NOT NULL,
        stable_since REAL NOT NULL DEFAULT 0,
        status TEXT NOT NULL,
        sha1 TEXT,
        box_file_id TEXT,
        etag TEXT,
        version_id TEXT,
        box_name TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt REAL NOT NULL DEFAULT 0,
        last_error TEXT,
        updated_at REAL NOT NULL,
        done_at REAL,
        PRIMARY KEY (mapping, relpath)
    );
    CREATE INDEX out_files_queue ON out_files (mapping, status, next_attempt);
    CREATE TABLE out_folders (
        mapping TEXT NOT NULL,
        reldir TEXT NOT NULL,
        folder_id TEXT NOT NULL,
        PRIMARY KEY (mapping, reldir)
    );
    CREATE TABLE out_sessions (
        mapping TEXT NOT NULL,
        relpath TEXT NOT NULL,
        session_id TEXT NOT NULL UNIQUE,
        part_size INTEGER NOT NULL,
        total_parts INTEGER NOT NULL,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        inode INTEGER NOT NULL,
        file_id TEXT,
        expires_at TEXT,
        created_at REAL NOT NULL,
        PRIMARY KEY (mapping, relpath)
    );
    CREATE TABLE out_parts (
        session_id TEXT NOT NULL,
        "offset" INTEGER NOT NULL,
        size INTEGER NOT NULL,
        part_id TEXT NOT NULL,
        sha1 TEXT,
        PRIMARY KEY (session_id, "offset")
    );
    """,
    # 2: claim_next orders by (next_attempt, relpath); without relpath in the index
    # SQLite sorted every pending row inside the write lock (183 ms a claim at 99k
    # queued, measured by the benchmark).  done_at serves status' "done today".
    """
    DROP INDEX IF EXISTS out_files_queue;
    CREATE INDEX out_files_queue ON out_files (mapping, status, next_attempt, relpath);
    CREATE INDEX out_files_done ON out_files (mapping, done_at);
    """,
]


def init(conn: sqlite3.Connection) -> None:
    ensure_schema(conn, COMPONENT, MIGRATIONS)


def _has_tables(conn: sqlite3.Connection) -> bool:
    return conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name='out_files'").fetchone() is not None


def planner_row(r: sqlite3.Row) -> planner.Row:
    return planner.Row(relpath=r["relpath"], status=r["status"], size=r["size"],
                       mtime_ns=r["mtime_ns"], inode=r["inode"],
                       stable_since=r["stable_since"], sha1=r["sha1"],
                       box_file_id=r["box_file_id"])


def get(conn: sqlite3.Connection, mapping: str, relpath: str) -> sqlite3.Row | None:
    return conn.execute("SELECT * FROM out_files WHERE mapping=? AND relpath=?",
                        (mapping, relpath)).fetchone()


def observe(conn: sqlite3.Connection, mapping: str, st: FileStat, now: float) -> bool:
    """Record what a scan/hint saw; True when the settle clock (re)started."""
    with transaction(conn):
        r = get(conn, mapping, st.relpath)
        d = planner.observe(planner_row(r) if r else None, st, now)
        if d.action == "nothing":
            return False
        conn.execute(
            """INSERT INTO out_files (mapping, relpath, size, mtime_ns, inode, stable_since,
                   status, attempts, next_attempt, last_error, updated_at)
               VALUES (?,?,?,?,?,?,'settling',0,0,NULL,?)
               ON CONFLICT(mapping, relpath) DO UPDATE SET size=excluded.size,
                   mtime_ns=excluded.mtime_ns, inode=excluded.inode,
                   stable_since=excluded.stable_since, status='settling', attempts=0,
                   next_attempt=0, last_error=NULL, updated_at=excluded.updated_at""",
            (mapping, st.relpath, st.size, st.mtime_ns, st.inode, d.stable_since, now))
        return True


def record_skip(conn: sqlite3.Connection, mapping: str, relpath: str, reason: str,
                st: FileStat | None = None) -> bool:
    """Remember a file that will not be sent (bad name); True when this is news."""
    now = time.time()
    with transaction(conn):
        r = get(conn, mapping, relpath)
        if r is not None and r["status"] == "skipped" and r["last_error"] == reason and (
                st is None or (r["size"], r["mtime_ns"], r["inode"]) == (st.size, st.mtime_ns, st.inode)):
            return False
        size, mtime_ns, inode = (st.size, st.mtime_ns, st.inode) if st else (0, 0, 0)
        conn.execute(
            """INSERT INTO out_files (mapping, relpath, size, mtime_ns, inode, status,
                   last_error, updated_at) VALUES (?,?,?,?,?,'skipped',?,?)
               ON CONFLICT(mapping, relpath) DO UPDATE SET size=excluded.size,
                   mtime_ns=excluded.mtime_ns, inode=excluded.inode, status='skipped',
                   last_error=excluded.last_error, updated_at=excluded.updated_at""",
            (mapping, relpath, size, mtime_ns, inode, reason, now))
        return True


def vanished(conn: sqlite3.Connection, mapping: str, present: set[str],
             under: Sequence[str] = ("",), keep_under: Iterable[str] = ()) -> int:
    """Drop waiting rows whose files a full scan no longer saw; returns how many."""
    keep = tuple(keep_under)
    n = 0
    with transaction(conn):
        rows = conn.execute("SELECT relpath, status, size, mtime_ns, inode, stable_since, sha1, "
                            "box_file_id FROM out_files WHERE mapping=?", (mapping,)).fetchall()
        for r in rows:
            rel = r["relpath"]
            if rel in present:
                continue
            if not any(u == "" or rel == u or rel.startswith(u + "/") for u in under):
                continue
            if any(rel == k or rel.startswith(k + "/") for k in keep if k):
                continue
            if planner.on_vanished(planner_row(r)) == "delete":
                conn.execute("DELETE FROM out_files WHERE mapping=? AND relpath=?", (mapping, rel))
                n += 1
    return n


def settling(conn: sqlite3.Connection, mapping: str) -> list[sqlite3.Row]:
    return conn.execute("SELECT * FROM out_files WHERE mapping=? AND status='settling'",
                        (mapping,)).fetchall()


def set_status(conn: sqlite3.Connection, mapping: str, relpath: str, status: str, *,
               expect: str | None = None, **fields) -> bool:
    """Move one row to `status` (optionally only from `expect`), updating `fields`."""
    assert status in planner.STATUSES, status
    cols = ["status=?", "updated_at=?"]
    vals: list = [status, time.time()]
    for k, v in fields.items():
        cols.append(f"{k}=?")
        vals.append(v)
    sql = f"UPDATE out_files SET {', '.join(cols)} WHERE mapping=? AND relpath=?"
    vals += [mapping, relpath]
    if expect is not None:
        sql += " AND status=?"
        vals.append(expect)
    with transaction(conn):
        return conn.execute(sql, vals).rowcount == 1


def restart_settle(conn: sqlite3.Connection, mapping: str, st: FileStat, now: float) -> None:
    """The file changed while settling or uploading: new stat, new settle clock."""
    with transaction(conn):
        conn.execute(
            "UPDATE out_files SET size=?, mtime_ns=?, inode=?, stable_since=?, status='settling', "
            "updated_at=? WHERE mapping=? AND relpath=?",
            (st.size, st.mtime_ns, st.inode, now, now, mapping, st.relpath))


def other_owner(conn: sqlite3.Connection, mapping: str, box_file_id: str,
                relpath: str) -> str | None:
    """Another local file already sent as this Box file (Box names ignore case)."""
    r = conn.execute("SELECT relpath FROM out_files WHERE mapping=? AND box_file_id=? AND relpath<>? "
                     "LIMIT 1", (mapping, box_file_id, relpath)).fetchone()
    return r[0] if r else None


def delete(conn: sqlite3.Connection, mapping: str, relpath: str) -> None:
    with transaction(conn):
        conn.execute("DELETE FROM out_files WHERE mapping=? AND relpath=?", (mapping, relpath))


def claim_next(conn: sqlite3.Connection, mapping: str, now: float) -> sqlite3.Row | None:
    """Atomically take the next due pending row for one worker (status -> uploading)."""
    with transaction(conn):
        r = conn.execute(
            "SELECT * FROM out_files WHERE mapping=? AND status='pending' AND next_attempt<=? "
            "ORDER BY next_attempt, relpath LIMIT 1", (mapping, now)).fetchone()
        if r is None:
            return None
        conn.execute("UPDATE out_files SET status='uploading', updated_at=? "
                     "WHERE mapping=? AND relpath=?", (now, mapping, r["relpath"]))
        return r


def release_stale_claims(conn: sqlite3.Connection, mapping: str) -> int:
    """At start-up: rows left `uploading` by a crash go back to the queue."""
    with transaction(conn):
        return conn.execute("UPDATE out_files SET status='pending', updated_at=? "
                            "WHERE mapping=? AND status='uploading'",
                            (time.time(), mapping)).rowcount


def due_now(conn: sqlite3.Connection, mapping: str) -> int:
    """`once` is an explicit pass: everything queued is tried now, with a fresh budget."""
    with transaction(conn):
        return conn.execute("UPDATE out_files SET next_attempt=0, attempts=0 "
                            "WHERE mapping=? AND status='pending'", (mapping,)).rowcount


def next_wake(conn: sqlite3.Connection, mapping: str) -> tuple[float | None, float | None]:
    """(earliest stable_since among settling rows, earliest next_attempt among pending)."""
    a = conn.execute("SELECT MIN(stable_since) FROM out_files WHERE mapping=? AND status='settling'",
                     (mapping,)).fetchone()[0]
    b = conn.execute("SELECT MIN(next_attempt) FROM out_files WHERE mapping=? AND status='pending'",
                     (mapping,)).fetchone()[0]
    return a, b


def counts(conn: sqlite3.Connection, mapping: str) -> dict[str, int]:
    return {r[0]: r[1] for r in conn.execute(
        "SELECT status, COUNT(*) FROM out_files WHERE mapping=? GROUP BY status", (mapping,))}


# --- folder id cache -----------------------------------------------------------------

def folder_id(conn: sqlite3.Connection, mapping: str, reldir: str) -> str | None:
    r = conn.execute("SELECT folder_id FROM out_folders WHERE mapping=? AND reldir=?",
                     (mapping, reldir)).fetchone()
    return r[0] if r else None


def put_folder_id(conn: sqlite3.Connection, mapping: str, reldir: str, fid: str) -> None:
    with transaction(conn):
        conn.execute("INSERT INTO out_folders (mapping, reldir, folder_id) VALUES (?,?,?) "
                     "ON CONFLICT(mapping, reldir) DO UPDATE SET folder_id=excluded.folder_id",
                     (mapping, reldir, fid))


def forget_folder(conn: sqlite3.Connection, mapping: str, reldir: str) -> None:
    """A cached folder id turned out stale (404): forget it and everything below."""
    with transaction(conn):
        conn.execute("DELETE FROM out_folders WHERE mapping=? AND (reldir=? OR reldir LIKE ?)",
                     (mapping, reldir, reldir.replace("%", r"\%") + "/%"))


# --- chunked upload sessions ---------------------------------------------------------

def get_session(conn: sqlite3.Connection, mapping: str, relpath: str) -> sqlite3.Row | None:
    return conn.execute("SELECT * FROM out_sessions WHERE mapping=? AND relpath=?",
                        (mapping, relpath)).fetchone()


def save_session(conn: sqlite3.Connection, mapping: str, relpath: str, session, st: FileStat,
                 file_id: str | None) -> None:
    with transaction(conn):
        conn.execute("DELETE FROM out_sessions WHERE mapping=? AND relpath=?", (mapping, relpath))
        conn.execute(
            "INSERT INTO out_sessions (mapping, relpath, session_id, part_size, total_parts, size, "
            "mtime_ns, inode, file_id, expires_at, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (mapping, relpath, session.id, session.part_size, session.total_parts, st.size,
             st.mtime_ns, st.inode, file_id, session.expires_at, time.time()))


def add_part(conn: sqlite3.Connection, session_id: str, offset: int, size: int, part_id: str,
             sha1: str | None) -> None:
    with transaction(conn):
        conn.execute('INSERT OR REPLACE INTO out_parts (session_id, "offset", size, part_id, sha1) '
                     "VALUES (?,?,?,?,?)", (session_id, offset, size, part_id, sha1))


def parts(conn: sqlite3.Connection, session_id: str) -> list[sqlite3.Row]:
    return conn.execute('SELECT * FROM out_parts WHERE session_id=? ORDER BY "offset"',
                        (session_id,)).fetchall()


def drop_session(conn: sqlite3.Connection, session_id: str) -> None:
    with transaction(conn):
        conn.execute("DELETE FROM out_parts WHERE session_id=?", (session_id,))
        conn.execute("DELETE FROM out_sessions WHERE session_id=?", (session_id,))


# --- status / retry ------------------------------------------------------------------

def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).isoformat(timespec="seconds")


def summarize(conn: sqlite3.Connection, mapping: str, *, problems_limit: int = 50) -> dict:
    """Queue figures and the files needing attention, for `status` (any connection)."""
    out = {"queued": 0, "active": 0, "failed": 0, "skipped": 0, "done_today": 0,
           "last_success": None, "problems": []}
    if not _has_tables(conn):
        return out
    out.update(planner.summarize_counts(counts(conn, mapping)))
    midnight = _dt.datetime.now().astimezone().replace(hour=0, minute=0, second=0,
                                                       microsecond=0).timestamp()
    out["done_today"] = conn.execute(
        "SELECT COUNT(*) FROM out_files WHERE mapping=? AND status='done' AND done_at>=?",
        (mapping, midnight)).fetchone()[0]
    out["last_success"] = _iso(conn.execute(
        "SELECT MAX(done_at) FROM out_files WHERE mapping=?", (mapping,)).fetchone()[0])
    out["problems"] = [
        {"path": r["relpath"], "status": r["status"], "error": r["last_error"],
         "attempts": r["attempts"]}
        for r in conn.execute(
            "SELECT relpath, status, last_error, attempts FROM out_files WHERE mapping=? AND "
            "(status IN ('failed','held','skipped') OR (status='pending' AND last_error IS NOT NULL)) "
            "ORDER BY updated_at DESC LIMIT ?", (mapping, problems_limit))]
    return out


def requeue_failed(conn: sqlite3.Connection, mapping: str | None = None,
                   paths: Iterable[str] = ()) -> int:
    """`cfbox-watch retry`: failed rows go back to pending, held rows are re-checked.

    Returns the number of rows requeued.  Skipped rows (bad names, on_conflict: skip)
    stay skipped: retrying cannot change their outcome, renaming the file does.
    """
    if not _has_tables(conn):
        return 0
    paths = list(paths)
    where, args = ["status IN ('failed','held')"], []
    if mapping is not None:
        where.append("mapping=?")
        args.append(mapping)
    if paths:
        where.append(f"relpath IN ({','.join('?' * len(paths))})")
        args += paths
    now = time.time()
    with transaction(conn):
        return conn.execute(
            "UPDATE out_files SET status=CASE status WHEN 'failed' THEN 'pending' ELSE 'settling' END, "
            "attempts=0, next_attempt=0, stable_since=0, updated_at=? WHERE " + " AND ".join(where),
            [now, *args]).rowcount

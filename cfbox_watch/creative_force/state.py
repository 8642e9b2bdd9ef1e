"""The Creative Force tables (component "creative_force") in the shared state DB.

The outgoing and incoming queues forget a row when its local file goes away (for
example `after_upload: move`), so what was sent and what came back is copied into
these tables as it happens; round-trip figures and completion logs then survive
moves, deletions and restarts.  Each function is one transaction.
"""

from __future__ import annotations

import sqlite3
import time

from cfbox_watch.db import ensure_schema, transaction

COMPONENT = "creative_force"

MIGRATIONS = [
    """
    CREATE TABLE cf_sent (
        entry TEXT NOT NULL,
        half TEXT NOT NULL,
        relpath TEXT NOT NULL,
        size INTEGER NOT NULL,
        sha1 TEXT NOT NULL,
        box_file_id TEXT,
        at REAL NOT NULL,
        PRIMARY KEY (entry, half, relpath)
    );
    CREATE TABLE cf_returned (
        entry TEXT NOT NULL,
        file_id TEXT NOT NULL,
        relpath TEXT NOT NULL,
        at REAL NOT NULL,
        PRIMARY KEY (entry, file_id)
    );
    CREATE TABLE cf_logs (
        entry TEXT NOT NULL,
        batch TEXT NOT NULL,
        name TEXT NOT NULL,
        box_file_id TEXT,
        fingerprint TEXT NOT NULL,
        files INTEGER NOT NULL,
        versions INTEGER NOT NULL DEFAULT 1,
        written_at REAL NOT NULL,
        PRIMARY KEY (entry, batch)
    );
    CREATE TABLE cf_overdue (
        entry TEXT NOT NULL,
        relpath TEXT NOT NULL,
        last_send REAL NOT NULL,
        warned_at REAL NOT NULL,
        PRIMARY KEY (entry, relpath, last_send)
    )
    """,
    # the name Box holds, when on_conflict: rename gave the upload another name
    """
    ALTER TABLE cf_sent ADD COLUMN box_name TEXT
    """,
    # the watermark's MAX(at) without a table scan every tick
    """
    CREATE INDEX cf_sent_at ON cf_sent (entry, half, at);
    CREATE INDEX cf_returned_at ON cf_returned (entry, at)
    """,
]


def init(conn: sqlite3.Connection) -> None:
    ensure_schema(conn, COMPONENT, MIGRATIONS)


def has_tables(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='cf_sent'"
                        ).fetchone() is not None


def _table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?",
                        (name,)).fetchone() is not None


def sync_sent(conn: sqlite3.Connection, entry: str, half: str, mapping: str,
              since: float = 0.0) -> tuple[int, float]:
    """Copy the outgoing half's confirmed files (status done, SHA-1 known, confirmed
    after `since`) in; a newer confirmation (a new version) moves the send time.
    Returns (rows changed, latest confirmation seen) for the caller's watermark."""
    if not _table(conn, "out_files"):
        return 0, since
    with transaction(conn):
        n = conn.execute(
            """INSERT INTO cf_sent(entry, half, relpath, size, sha1, box_file_id, at, box_name)
               SELECT ?, ?, relpath, size, sha1, box_file_id, COALESCE(done_at, updated_at),
                   box_name
               FROM out_files WHERE mapping=? AND status='done' AND sha1 IS NOT NULL
                   AND COALESCE(done_at, updated_at) > ?
               ON CONFLICT(entry, half, relpath) DO UPDATE SET size=excluded.size,
                   sha1=excluded.sha1, box_file_id=excluded.box_file_id, at=excluded.at,
                   box_name=excluded.box_name
               WHERE excluded.sha1 IS NOT cf_sent.sha1 OR excluded.at > cf_sent.at""",
            (entry, half, mapping, since)).rowcount
        latest = conn.execute("SELECT MAX(at) FROM cf_sent WHERE entry=? AND half=?",
                              (entry, half)).fetchone()[0]
    return n, latest if latest is not None else since


def sync_returned(conn: sqlite3.Connection, entry: str, mapping: str,
                  since: float = 0.0) -> tuple[int, float]:
    """Copy the incoming half's files placed after `since` in (one row per Box file; a
    new version placed later moves the return time)."""
    if not _table(conn, "in_files"):
        return 0, since
    with transaction(conn):
        n = conn.execute(
            """INSERT INTO cf_returned(entry, file_id, relpath, at)
               SELECT ?, file_id, box_path, COALESCE(done_at, updated_at)
               FROM in_files WHERE mapping=? AND status='done' AND relpath IS NOT NULL
                   AND COALESCE(done_at, updated_at) > ?
               ON CONFLICT(entry, file_id) DO UPDATE SET relpath=excluded.relpath, at=excluded.at
               WHERE excluded.at > cf_returned.at""",
            (entry, mapping, since)).rowcount
        latest = conn.execute("SELECT MAX(at) FROM cf_returned WHERE entry=?", (entry,)).fetchone()[0]
    return n, latest if latest is not None else since


def queue_signature(conn: sqlite3.Connection, mapping: str) -> tuple:
    """Changes whenever the outgoing queue of `mapping` changes (cheap: one aggregate)."""
    if not _table(conn, "out_files"):
        return ()
    return tuple(conn.execute(
        "SELECT COUNT(*), MAX(updated_at), MAX(done_at), SUM(status='done') FROM out_files "
        "WHERE mapping=?", (mapping,)).fetchone())


def sent(conn: sqlite3.Connection, entry: str, half: str | None = None) -> list[sqlite3.Row]:
    if half is None:
        return conn.execute("SELECT * FROM cf_sent WHERE entry=?", (entry,)).fetchall()
    return conn.execute("SELECT * FROM cf_sent WHERE entry=? AND half=?", (entry, half)).fetchall()


def returned(conn: sqlite3.Connection, entry: str) -> list[sqlite3.Row]:
    return conn.execute("SELECT * FROM cf_returned WHERE entry=?", (entry,)).fetchall()


def queue_rows(conn: sqlite3.Connection, mapping: str) -> list[sqlite3.Row]:
    if not _table(conn, "out_files"):
        return []
    return conn.execute(
        "SELECT relpath, status, MAX(COALESCE(done_at, 0), updated_at) AS changed_at "
        "FROM out_files WHERE mapping=?", (mapping,)).fetchall()


def invalid_returns(conn: sqlite3.Connection, mapping: str) -> int:
    if not _table(conn, "in_files"):
        return 0
    return conn.execute("SELECT COUNT(*) FROM in_files WHERE mapping=? AND status IN ('rejected', 'invalid') "
                        "AND last_error LIKE 'name not accepted%'", (mapping,)).fetchone()[0]


def logs(conn: sqlite3.Connection, entry: str) -> dict[str, sqlite3.Row]:
    return {r["batch"]: r for r in conn.execute("SELECT * FROM cf_logs WHERE entry=?", (entry,))}


def record_log(conn: sqlite3.Connection, entry: str, batch: str, name: str, box_file_id: str,
               fingerprint: str, files: int, now: float | None = None) -> None:
    now = time.time() if now is None else now
    with transaction(conn):
        conn.execute(
            """INSERT INTO cf_logs(entry, batch, name, box_file_id, fingerprint, files, versions,
                   written_at) VALUES (?,?,?,?,?,?,1,?)
               ON CONFLICT(entry, batch) DO UPDATE SET name=excluded.name,
                   box_file_id=excluded.box_file_id, fingerprint=excluded.fingerprint,
                   files=excluded.files, versions=cf_logs.versions + 1,
                   written_at=excluded.written_at""",
            (entry, batch, name, box_file_id, fingerprint, files, now))


def touch_log(conn: sqlite3.Connection, entry: str, batch: str, now: float) -> None:
    """The batch was looked at and its log is already right: remember when."""
    with transaction(conn):
        conn.execute("UPDATE cf_logs SET written_at=? WHERE entry=? AND batch=?", (now, entry, batch))


def warned(conn: sqlite3.Connection, entry: str) -> set[tuple[str, float]]:
    return {(r["relpath"], r["last_send"]) for r in
            conn.execute("SELECT relpath, last_send FROM cf_overdue WHERE entry=?", (entry,))}


def record_warned(conn: sqlite3.Connection, entry: str, relpath: str, last_send: float,
                  now: float) -> None:
    with transaction(conn):
        conn.execute("INSERT OR IGNORE INTO cf_overdue(entry, relpath, last_send, warned_at) "
                     "VALUES (?,?,?,?)", (entry, relpath, last_send, now))

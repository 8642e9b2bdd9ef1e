"""Opening the one SQLite state database.

The state database is the single source of truth for the work queue.  Every thread
opens its own connection through `open_db` (sqlite3 connections must not be shared
between threads); WAL lets `cfbox-watch status` read while the daemon writes, and the
busy timeout lets two writers wait for each other instead of failing.

Each component (outgoing, incoming, ...) owns its tables and migrates them with
`ensure_schema`, which records a version per component, so that the components can
evolve independently without one global migration list.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Sequence

DB_NAME = "state.sqlite3"


def db_path(state_dir: str | os.PathLike) -> Path:
    return Path(state_dir) / DB_NAME


def open_db(path: str | os.PathLike, *, readonly: bool = False) -> sqlite3.Connection:
    """Open (creating if needed) the state DB with WAL and a generous busy timeout.

    Autocommit mode (isolation_level=None): callers group each state change into an
    explicit `with transaction(conn):` so that one change is one transaction.
    """
    path = Path(path)
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30, isolation_level=None,
                               check_same_thread=False)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        _enable_wal(conn)
        conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.row_factory = sqlite3.Row
    if not readonly:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_versions (component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
        )
    return conn


def _enable_wal(conn: sqlite3.Connection) -> None:
    """Switch a new database to WAL (the mode is stored in the file, so later opens only
    read it).  Changing the mode needs the database to itself, and SQLite answers
    "database is locked" at once, without its busy handler, when another connection of
    the same start-up is already inside a transaction: so wait here instead.
    """
    deadline = time.monotonic() + 30
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class transaction:
    """`with transaction(conn):` — BEGIN IMMEDIATE ... COMMIT, ROLLBACK on error.

    IMMEDIATE takes the write lock up front, so two daemons or threads never both read
    a row as "pending" and both claim it.
    """

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")


def ensure_schema(conn: sqlite3.Connection, component: str, migrations: Sequence[str]) -> None:
    """Apply the not-yet-applied migrations of `component` (each an SQL script), in order.

    Migrations are append-only: never edit one that has shipped, add a new one.
    """
    with transaction(conn):
        row = conn.execute(
            "SELECT version FROM schema_versions WHERE component=?", (component,)
        ).fetchone()
        current = row[0] if row else 0
        if current > len(migrations):
            raise RuntimeError(
                f"state database schema for {component!r} is version {current}, newer than this "
                f"cfbox-watch understands ({len(migrations)}); upgrade cfbox-watch"
            )
        for version in range(current, len(migrations)):
            for statement in _split_sql(migrations[version]):
                conn.execute(statement)
        conn.execute(
            "INSERT INTO schema_versions(component, version) VALUES(?, ?) "
            "ON CONFLICT(component) DO UPDATE SET version=excluded.version",
            (component, len(migrations)),
        )


def _split_sql(script: str) -> list[str]:
    # executescript() would COMMIT our transaction; split on ';' instead (no
    # semicolons inside our DDL strings).
    return [s.strip() for s in script.split(";") if s.strip()]

"""The state DB helper: first opens racing each other, schema versions per component."""

import sqlite3
import threading

import pytest

from cfbox_watch.db import ensure_schema, open_db, transaction


def test_many_threads_opening_a_new_database_at_once_all_succeed(tmp_path):
    """The daemon's workers open the state DB together at first start; switching a new
    file to WAL used to fail one of them with 'database is locked' (seen in CI)."""
    errors = []
    for round_ in range(150):
        path = tmp_path / f"s{round_}.sqlite3"

        def worker():
            try:
                conn = open_db(path)
                ensure_schema(conn, "t", ["CREATE TABLE x (a INTEGER)"])
                with transaction(conn):
                    conn.execute("INSERT INTO x VALUES (1)")
                conn.close()
            except sqlite3.Error as e:
                errors.append(repr(e))

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    conn = open_db(tmp_path / "s0.sqlite3", readonly=True)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT COUNT(*) FROM x").fetchone()[0] == 8


def test_schema_migrations_apply_once_and_refuse_a_newer_database(tmp_path):
    conn = open_db(tmp_path / "s.sqlite3")
    ensure_schema(conn, "a", ["CREATE TABLE a1 (x)"])
    ensure_schema(conn, "a", ["CREATE TABLE a1 (x)", "CREATE TABLE a2 (y)"])
    ensure_schema(conn, "a", ["CREATE TABLE a1 (x)", "CREATE TABLE a2 (y)"])   # no-op
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"a1", "a2"} <= tables
    with pytest.raises(RuntimeError, match="upgrade cfbox-watch"):
        ensure_schema(conn, "a", ["CREATE TABLE a1 (x)"])

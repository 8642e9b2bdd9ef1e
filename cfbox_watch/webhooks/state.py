"""The webhooks component's tables in the state DB.

`webhook_deliveries` remembers the body `id` of every accepted delivery, so that a
replay (an attacker's, or Box retrying after our answer was lost) does no work twice;
Box keeps that id across its retries while BOX-DELIVERY-ID changes, so the body id is
the key.  `webhook_registrations` remembers which webhooks this install created, so a
mapping that goes away takes its webhook with it even after `public_url` changed."""

from __future__ import annotations

import sqlite3
import time

from cfbox_watch.db import ensure_schema, transaction

COMPONENT = "webhooks"
MIGRATIONS = [
    """
    CREATE TABLE webhook_deliveries (
        body_id TEXT PRIMARY KEY,
        delivery_id TEXT,
        trigger TEXT,
        source_id TEXT,
        received_at REAL NOT NULL
    );
    CREATE INDEX webhook_deliveries_age ON webhook_deliveries(received_at);
    CREATE TABLE webhook_registrations (
        connection TEXT NOT NULL,
        folder_id TEXT NOT NULL,
        webhook_id TEXT NOT NULL,
        address TEXT NOT NULL,
        mapping TEXT,
        updated_at REAL NOT NULL,
        PRIMARY KEY (connection, folder_id)
    )
    """,
]

# Box retries a failed delivery for about two hours; a day covers that with margin.
KEEP_DELIVERIES = 24 * 3600.0
PRUNE_EVERY = 64


def ensure(conn: sqlite3.Connection) -> None:
    ensure_schema(conn, COMPONENT, MIGRATIONS)


def first_sighting(conn: sqlite3.Connection, body_id: str, delivery_id: str | None, trigger: str | None,
                   source_id: str | None, now: float | None = None) -> bool:
    """Record an accepted delivery; False when its body id was seen before (a replay)."""
    now = time.time() if now is None else now
    with transaction(conn):
        cur = conn.execute(
            "INSERT OR IGNORE INTO webhook_deliveries(body_id, delivery_id, trigger, source_id, received_at) "
            "VALUES (?, ?, ?, ?, ?)", (body_id, delivery_id, trigger, source_id, now))
        fresh = cur.rowcount == 1
        if fresh and (cur.lastrowid or 0) % PRUNE_EVERY == 0:  # now and then, not on every delivery
            conn.execute("DELETE FROM webhook_deliveries WHERE received_at < ?", (now - KEEP_DELIVERIES,))
    return fresh


def registrations(conn: sqlite3.Connection, connection: str) -> dict[str, dict]:
    """folder_id -> {webhook_id, address, mapping} for one connection."""
    rows = conn.execute("SELECT folder_id, webhook_id, address, mapping FROM webhook_registrations "
                        "WHERE connection=?", (connection,)).fetchall()
    return {r["folder_id"]: {"webhook_id": r["webhook_id"], "address": r["address"], "mapping": r["mapping"]}
            for r in rows}


def save_registration(conn: sqlite3.Connection, connection: str, folder_id: str, webhook_id: str,
                      address: str, mapping: str | None) -> None:
    with transaction(conn):
        conn.execute(
            "INSERT INTO webhook_registrations(connection, folder_id, webhook_id, address, mapping, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(connection, folder_id) DO UPDATE SET "
            "webhook_id=excluded.webhook_id, address=excluded.address, mapping=excluded.mapping, "
            "updated_at=excluded.updated_at",
            (connection, folder_id, webhook_id, address, mapping, time.time()))


def drop_registration(conn: sqlite3.Connection, connection: str, folder_id: str) -> None:
    with transaction(conn):
        conn.execute("DELETE FROM webhook_registrations WHERE connection=? AND folder_id=?",
                     (connection, folder_id))

"""The emulator's state: SQLite for items, users, tokens, sessions and events, plain
files for content.  Everything lives under the `--data` folder so the emulator can be
stopped and started again (outage tests) without losing what it holds.

One connection guarded by one lock: the emulator's SQL statements are tiny and the
slow part (moving bytes) happens outside the lock, so this is simpler than a pool
and still serves many concurrent requests.  `changed` is notified on every new event
so long-poll requests can wait on it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from cfbox_watch.emulator.names import name_key

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counter (id INTEGER PRIMARY KEY AUTOINCREMENT, dummy INTEGER);
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, login TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY, type TEXT NOT NULL, name TEXT NOT NULL, name_key TEXT NOT NULL,
    parent_id TEXT NOT NULL, owner_id TEXT NOT NULL, created_by TEXT NOT NULL,
    modified_by TEXT NOT NULL, created_at TEXT NOT NULL, modified_at TEXT NOT NULL,
    content_created_at TEXT, content_modified_at TEXT, etag INTEGER NOT NULL DEFAULT 0,
    trashed_at TEXT, version_id TEXT, size INTEGER NOT NULL DEFAULT 0, sha1 TEXT);
CREATE INDEX IF NOT EXISTS items_parent ON items (parent_id, name_key);
CREATE TABLE IF NOT EXISTS versions (
    id TEXT PRIMARY KEY, file_id TEXT NOT NULL, name TEXT NOT NULL, sha1 TEXT NOT NULL,
    size INTEGER NOT NULL, created_at TEXT NOT NULL, created_by TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS versions_file ON versions (file_id);
CREATE TABLE IF NOT EXISTS collabs (folder_id TEXT NOT NULL, user_id TEXT NOT NULL, role TEXT NOT NULL,
    PRIMARY KEY (folder_id, user_id));
CREATE TABLE IF NOT EXISTS tokens (token TEXT PRIMARY KEY, user_id TEXT NOT NULL, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS jtis (jti TEXT PRIMARY KEY, exp REAL NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL, event_type TEXT NOT NULL,
    item_id TEXT NOT NULL, actor_id TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS event_views (
    seq INTEGER NOT NULL, user_id TEXT NOT NULL, source TEXT NOT NULL, PRIMARY KEY (user_id, seq));
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY, user_id TEXT NOT NULL, folder_id TEXT, file_id TEXT, file_name TEXT,
    file_size INTEGER NOT NULL, part_size INTEGER NOT NULL, total_parts INTEGER NOT NULL,
    created_at REAL NOT NULL, expires_at REAL NOT NULL, commit_calls INTEGER NOT NULL DEFAULT 0,
    committed_file_id TEXT);
CREATE TABLE IF NOT EXISTS parts (
    session_id TEXT NOT NULL, offset INTEGER NOT NULL, size INTEGER NOT NULL, part_id TEXT NOT NULL,
    sha1 TEXT NOT NULL, PRIMARY KEY (session_id, offset));
"""


def iso(ts: float | None = None) -> str:
    dt = datetime.fromtimestamp(time.time() if ts is None else ts, timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S+00:00")


class Store:
    def __init__(self, data_dir: str | os.PathLike):
        self.dir = Path(data_dir)
        self.blobs = self.dir / "blobs"
        self.tmp = self.dir / "tmp"
        self.parts_dir = self.dir / "parts"
        for d in (self.blobs, self.tmp, self.parts_dir):
            d.mkdir(parents=True, exist_ok=True)
        for leftover in self.tmp.iterdir():  # half-received bodies from a killed run
            leftover.unlink(missing_ok=True)
        self.db = sqlite3.connect(self.dir / "emulator.sqlite3", check_same_thread=False,
                                  isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=30000")  # a second process (inspection) must not make us fail
        self.db.executescript(SCHEMA)
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)

    # -- helpers -------------------------------------------------------------
    def q(self, sql: str, args: tuple = ()) -> list[dict]:
        with self.lock:
            return [dict(r) for r in self.db.execute(sql, args).fetchall()]

    def q1(self, sql: str, args: tuple = ()) -> dict | None:
        rows = self.q(sql, args)
        return rows[0] if rows else None

    def x(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        with self.lock:
            return self.db.execute(sql, args)

    @contextmanager
    def transaction(self):
        """All-or-nothing for multi-row changes (a file row and its first version), so
        an emulator killed mid-request never leaves a file without content."""
        with self.lock:
            if self.db.in_transaction:  # nested: the outer transaction decides
                yield
                return
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def new_id(self) -> str:
        with self.lock:
            cur = self.db.execute("INSERT INTO counter (dummy) VALUES (0)")
            return str(100000000 + cur.lastrowid * 7)

    def tmp_path(self) -> Path:
        return self.tmp / uuid.uuid4().hex

    def blob_path(self, version_id: str) -> Path:
        return self.blobs / version_id

    def close(self) -> None:
        with self.lock:
            self.db.close()

    # -- meta ----------------------------------------------------------------
    def meta(self, key: str, default: str | None = None) -> str | None:
        row = self.q1("SELECT value FROM meta WHERE key=?", (key,))
        return row["value"] if row else default

    def set_meta(self, key: str, value: str) -> None:
        self.x("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # -- users ---------------------------------------------------------------
    def create_user(self, name: str, login: str) -> str:
        uid = self.new_id()
        self.x("INSERT INTO users (id, name, login, created_at) VALUES (?,?,?,?)",
               (uid, name, login, iso()))
        return uid

    def user(self, uid: str) -> dict | None:
        return self.q1("SELECT * FROM users WHERE id=?", (uid,))

    def user_ids(self) -> list[str]:
        return [r["id"] for r in self.q("SELECT id FROM users")]

    # -- items ---------------------------------------------------------------
    def item(self, item_id: str) -> dict | None:
        return self.q1("SELECT * FROM items WHERE id=?", (item_id,))

    def collaborators(self, folder_id: str) -> set[str]:
        return {r["user_id"] for r in self.q("SELECT user_id FROM collabs WHERE folder_id=?", (folder_id,))}

    def add_collab(self, folder_id: str, user_id: str, role: str = "editor") -> None:
        self.x("INSERT OR REPLACE INTO collabs (folder_id, user_id, role) VALUES (?,?,?)",
               (folder_id, user_id, role))

    def chain(self, row: dict) -> list[dict]:
        """The item and its ancestors, nearest first (root '0' excluded)."""
        out = [row]
        with self.lock:
            while out[-1]["parent_id"] != "0":
                parent = self.item(out[-1]["parent_id"])
                if parent is None:
                    break
                out.append(parent)
        return out

    def access_root(self, user_id: str, row: dict) -> int | None:
        """Index in `chain(row)` of the topmost node that gives `user_id` access,
        or None when the user cannot see the item (Box answers 404 then)."""
        chain = self.chain(row)
        if any(n["trashed_at"] for n in chain):
            return None
        found = None
        for i, node in enumerate(chain):
            if node["owner_id"] == user_id or (node["type"] == "folder" and user_id in self.collaborators(node["id"])):
                found = i
        return found

    def can_see(self, user_id: str, row: dict) -> bool:
        return self.access_root(user_id, row) is not None

    def visible_path(self, user_id: str, row: dict) -> list[dict]:
        """Ancestors as the user sees them, top first, after the virtual root."""
        chain = self.chain(row)
        top = self.access_root(user_id, row)
        if top is None:
            return []
        return list(reversed(chain[1:top + 1]))

    def children(self, parent_id: str, viewer: str) -> list[dict]:
        """Live children in stable id order (new items append, so markers stay valid)."""
        if parent_id == "0":
            rows = self.q(
                "SELECT * FROM items WHERE trashed_at IS NULL AND ((parent_id='0' AND owner_id=?) OR"
                " id IN (SELECT folder_id FROM collabs WHERE user_id=?))", (viewer, viewer))
            rows = [r for r in rows if r["parent_id"] == "0" or self.visible_path(viewer, r) == []]
        else:
            rows = self.q("SELECT * FROM items WHERE parent_id=? AND trashed_at IS NULL", (parent_id,))
        rows.sort(key=lambda r: int(r["id"]))
        return rows

    def conflict(self, parent_id: str, name: str, viewer: str, exclude: str | None = None) -> dict | None:
        key = name_key(name)
        if parent_id == "0":
            rows = [r for r in self.children(parent_id, viewer) if r["name_key"] == key]
        else:  # indexed: keeps big folders linear to fill, not quadratic
            rows = self.q("SELECT * FROM items WHERE parent_id=? AND name_key=? AND trashed_at IS NULL",
                          (parent_id, key))
        for r in rows:
            if r["id"] != exclude:
                return r
        return None

    def descendants(self, folder_id: str) -> list[dict]:
        out, todo = [], [folder_id]
        while todo:
            fid = todo.pop()
            for r in self.q("SELECT * FROM items WHERE parent_id=? AND trashed_at IS NULL", (fid,)):
                out.append(r)
                if r["type"] == "folder":
                    todo.append(r["id"])
        return out

    def owner_for_new_child(self, parent_id: str, actor: str) -> str:
        """Box makes the folder owner the owner of anything added to the folder."""
        if parent_id == "0":
            return actor
        return self.item(parent_id)["owner_id"]

    def insert_item(self, *, type: str, name: str, parent_id: str, actor: str,
                    content_created_at: str | None = None, content_modified_at: str | None = None) -> dict:
        iid = self.new_id()
        now = iso()
        self.x(
            "INSERT INTO items (id, type, name, name_key, parent_id, owner_id, created_by, modified_by,"
            " created_at, modified_at, content_created_at, content_modified_at, etag)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,0)",
            (iid, type, name, name_key(name), parent_id, self.owner_for_new_child(parent_id, actor),
             actor, actor, now, now, content_created_at or now, content_modified_at or now))
        return self.item(iid)

    def update_item(self, item_id: str, actor: str, **fields) -> dict:
        if "name" in fields:
            fields["name_key"] = name_key(fields["name"])
        fields["modified_by"] = actor
        fields["modified_at"] = iso()
        cols = ", ".join(f"{k}=?" for k in fields)
        self.x(f"UPDATE items SET {cols}, etag=etag+1 WHERE id=?", (*fields.values(), item_id))
        return self.item(item_id)

    def add_version(self, file_id: str, content: Path, sha1: str, size: int, actor: str,
                    name: str, content_modified_at: str | None = None) -> dict:
        vid = self.new_id()
        os.replace(content, self.blob_path(vid))
        with self.lock:
            self.x("INSERT INTO versions (id, file_id, name, sha1, size, created_at, created_by)"
                   " VALUES (?,?,?,?,?,?,?)", (vid, file_id, name, sha1, size, iso(), actor))
            first = self.item(file_id)["version_id"] is None
            fields = dict(version_id=vid, sha1=sha1, size=size)
            if content_modified_at:
                fields["content_modified_at"] = content_modified_at
            if first:
                self.x("UPDATE items SET version_id=?, sha1=?, size=? WHERE id=?", (vid, sha1, size, file_id))
                if content_modified_at:
                    self.x("UPDATE items SET content_modified_at=? WHERE id=?", (content_modified_at, file_id))
                return self.item(file_id)
            return self.update_item(file_id, actor, **fields)

    def versions(self, file_id: str) -> list[dict]:
        return self.q("SELECT * FROM versions WHERE file_id=? ORDER BY CAST(id AS INTEGER)", (file_id,))

    def version(self, version_id: str) -> dict | None:
        return self.q1("SELECT * FROM versions WHERE id=?", (version_id,))

    # -- tokens --------------------------------------------------------------
    def add_token(self, token: str, user_id: str, expires_at: float) -> None:
        self.x("INSERT INTO tokens (token, user_id, expires_at) VALUES (?,?,?)", (token, user_id, expires_at))

    def token_user(self, token: str) -> str | None:
        row = self.q1("SELECT * FROM tokens WHERE token=?", (token,))
        if row is None or row["expires_at"] <= time.time():
            return None
        return row["user_id"]

    def expire_tokens(self) -> None:
        self.x("UPDATE tokens SET expires_at=0")

    def use_jti(self, jti: str, exp: float) -> bool:
        """Record a JWT id; False when it was used before (Box: single use)."""
        with self.lock:
            self.x("DELETE FROM jtis WHERE exp < ?", (time.time() - 600,))
            try:
                self.x("INSERT INTO jtis (jti, exp) VALUES (?,?)", (jti, exp))
            except sqlite3.IntegrityError:
                return False
            return True

    # -- events --------------------------------------------------------------
    def add_event(self, event_type: str, row: dict, actor: str, views: dict[str, dict]) -> None:
        """`views`: user id -> the item JSON as that user sees it (the event's source)."""
        if not views:
            return
        with self.changed:
            cur = self.x("INSERT INTO events (event_id, event_type, item_id, actor_id, created_at)"
                         " VALUES (?,?,?,?,?)", (str(uuid.uuid4()), event_type, row["id"], actor, iso()))
            for uid, source in views.items():
                self.x("INSERT INTO event_views (seq, user_id, source) VALUES (?,?,?)",
                       (cur.lastrowid, uid, json.dumps(source)))
            self.changed.notify_all()

    def last_event_seq(self) -> int:
        row = self.q1("SELECT MAX(seq) AS m FROM events")
        return int(row["m"] or 0)

    def events_after(self, user_id: str, seq: int, limit: int) -> list[dict]:
        return self.q(
            "SELECT e.*, v.source FROM events e JOIN event_views v ON v.seq=e.seq AND v.user_id=?"
            " WHERE e.seq > ? ORDER BY e.seq LIMIT ?", (user_id, seq, limit))

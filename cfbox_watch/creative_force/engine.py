"""The `<entry>:cf` Side: completion logs and round-trip tracking for one
post_production entry (docs/creative-force.md).

It does no transfers of its own except the small completion logs: it follows the
outgoing and incoming halves through the state DB (copying confirmed sends and
returns into its own tables), decides with the pure `completion_log` and `roundtrip`
rules, and talks to Box only to verify a finished batch's folder and upload its log.
A completion log is built in memory and uploaded directly, so it never exists in the
outgoing folder and can never be picked up as an outgoing file.
"""

from __future__ import annotations

import hashlib
import io
import logging
import sqlite3
import threading
import time

from cfbox_watch.config_model import Config, CreativeForce
from cfbox_watch.creative_force import completion_log as cl
from cfbox_watch.creative_force import roundtrip as rt
from cfbox_watch.creative_force import state
from cfbox_watch.db import db_path, open_db
from cfbox_watch.errors import CfboxError, ItemError, NameConflictError, NotFoundError, SetupError
from cfbox_watch.names import casefold_key

log = logging.getLogger("cfbox_watch.creative_force")

TICK = 5.0            # seconds between looks at the state DB (no Box call when idle)
STALL_SECONDS = 900.0
WATERMARK_SLACK = 120.0   # rows confirmed by other threads commit a little after their time
OVERDUE_EVERY = 60.0      # seconds between overdue looks when nothing changed


def sent_records(rows) -> list[rt.Sent]:
    return [rt.Sent(r["relpath"], r["at"], r["half"] == "rejection") for r in rows]


def returned_records(rows) -> list[rt.Returned]:
    return [rt.Returned(r["relpath"], r["at"]) for r in rows]


def tally(conn, cf: CreativeForce) -> rt.Tally:
    return rt.match(sent_records(state.sent(conn, cf.name)),
                    returned_records(state.returned(conn, cf.name)), cf.match)


def report(conn, cf: CreativeForce, now: float) -> dict:
    """The `status --json` block of one entry (`round_trip` list item)."""
    base = {"name": cf.name, "match": cf.match, "return_due": cf.return_due,
            "completion_log": None if cf.completion_log is None else
            {"quiet": cf.completion_log.quiet, "name": cf.completion_log.name}}
    if conn is None or not state.has_tables(conn):
        empty = rt.report(rt.Tally((), ()), now)
        return {**base, **empty, "overdue": 0, "invalid_returns": 0}
    t = tally(conn, cf)
    out = {**base, **rt.report(t, now)}
    late = rt.overdue(t.items, now, cf.return_due)
    out["overdue"] = len(late)
    out["invalid_returns"] = state.invalid_returns(conn, cf.incoming.name) if cf.incoming else 0
    late_by_batch: dict[str, int] = {}
    for i in late:
        late_by_batch[i.batch] = late_by_batch.get(i.batch, 0) + 1
    logs = state.logs(conn, cf.name)
    known = {b["batch"] for b in out["batches"]}
    for b in out["batches"]:
        b["overdue"] = late_by_batch.get(b["batch"], 0)
        row = logs.get(b["batch"])
        b["completion_log"] = None if row is None else {
            "name": row["name"], "files": row["files"], "versions": row["versions"],
            "box_file_id": row["box_file_id"]}
    for batch, row in sorted(logs.items()):   # a batch logged but with nothing tracked
        if batch not in known:
            out["batches"].append({"batch": batch, **rt.figures([], now), "overdue": 0,
                                   "completion_log": {"name": row["name"], "files": row["files"],
                                                      "versions": row["versions"],
                                                      "box_file_id": row["box_file_id"]}})
    return out


class CreativeForceSide:
    def __init__(self, config: Config, cf: CreativeForce, remote):
        self.config = config
        self.cf = cf
        self.remote = remote
        self.name = f"{cf.name}:cf"
        self.mapping = cf.name
        self.db_path = db_path(config.state_dir)
        self.tick = TICK
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ready = False
        self._state = "idle"
        self._error: str | None = None
        self._last_progress = time.monotonic()
        self._last_success: float | None = None
        self._logs_today = 0
        self._checked: dict[str, float] = {}   # batch -> quiet_since already handled
        self._failures: dict[str, str] = {}    # batch -> why its log could not be written
        self._retry_at: dict[str, float] = {}  # batch -> not before (after a failure)
        self.retry_delay = 30.0
        self._marks: dict[str, float] = {}     # sync watermarks (confirmation times)
        self._queue_sig: tuple = ()
        self._next_look = 0.0                  # re-evaluate batches then even without change
        self._next_overdue = 0.0

    # -- Side protocol -------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=f"{self.name}-loop", daemon=True)
        self._thread.start()

    def ready(self) -> bool:
        return self._ready or self._state in ("failed", "error")

    def request_stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float) -> bool:
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def heartbeat(self) -> bool:
        if self._thread is None or not self._thread.is_alive():
            return True
        return time.monotonic() - self._last_progress < STALL_SECONDS

    def summary(self) -> dict:
        return {"queued": 0, "active": 0, "failed": len(self._failures),
                "done_today": self._logs_today,
                "last_success": None if self._last_success is None else
                time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(self._last_success)),
                "state": self._state, "error": self._error}

    def run_once(self) -> bool:
        conn = open_db(self.db_path)
        try:
            state.init(conn)
            self.step(conn, time.time())
        finally:
            conn.close()
        return not self._failures

    # -- work ----------------------------------------------------------------------
    def _loop(self) -> None:
        conn = open_db(self.db_path)
        try:
            state.init(conn)
            for batch, row in state.logs(conn, self.cf.name).items():
                self._checked[batch] = row["written_at"]
            self._ready = True
            self._state = "running"
            while not self._stop.is_set():
                self._last_progress = time.monotonic()
                try:
                    self.step(conn, time.time())
                except SetupError as e:
                    self._state, self._error = "error", str(e)
                    log.error("%s: stopped: %s", self.name, e, extra={"fields": {"MAPPING": self.mapping}})
                    return
                except sqlite3.OperationalError as e:   # e.g. locked past the busy timeout
                    log.warning("%s: state database busy (%s); trying again", self.name, e,
                                extra={"fields": {"MAPPING": self.mapping}})
                except Exception as e:  # a bug must not kill the daemon; say so once
                    self._state, self._error = "error", f"internal error: {type(e).__name__}: {e}"
                    log.exception("%s: internal error", self.name)
                    return
                self._stop.wait(self.tick)
        finally:
            self._ready = True
            if self._state == "running":
                self._state = "stopped"
            conn.close()

    def step(self, conn, now: float) -> None:
        """One look: copy new sends/returns in, write due completion logs, warn overdue."""
        cf = self.cf
        changed = 0
        for key, half, m in (("out", "out", cf.outgoing), ("rej", "rejection", cf.rejection)):
            if m is not None:
                n, latest = state.sync_sent(conn, cf.name, half, m.name, self._marks.get(key, 0.0))
                self._marks[key] = latest - WATERMARK_SLACK
                changed += n
        if cf.incoming is not None:
            n, latest = state.sync_returned(conn, cf.name, cf.incoming.name, self._marks.get("in", 0.0))
            self._marks["in"] = latest - WATERMARK_SLACK
            changed += n
        if cf.completion_log is not None and cf.outgoing is not None:
            sig = state.queue_signature(conn, cf.outgoing.name)
            if changed or sig != self._queue_sig or now >= self._next_look:
                self._queue_sig = sig
                self._completion_logs(conn, now)
        if cf.return_due is not None and (changed or now >= self._next_overdue):
            self._next_overdue = now + min(OVERDUE_EVERY, cf.return_due / 2)
            self._overdue(conn, now)

    def _overdue(self, conn, now: float) -> None:
        t = tally(conn, self.cf)
        done = state.warned(conn, self.cf.name)
        for item in rt.overdue(t.items, now, self.cf.return_due):
            if (item.relpath, item.last_send) in done:
                continue
            age_h = (now - item.last_send) / 3600
            log.warning("%s: %s not returned %.1f h after it was sent (return_due %.1f h)",
                        self.name, item.relpath, age_h, self.cf.return_due / 3600,
                        extra={"fields": {"MAPPING": self.cf.name, "ACTION": "overdue",
                                          "PATH": item.relpath, "BATCH": item.batch}})
            state.record_warned(conn, self.cf.name, item.relpath, item.last_send, now)

    def _completion_logs(self, conn, now: float) -> None:
        cfg = self.cf.completion_log
        sent = [cl.SentFile(r["relpath"], r["size"], r["sha1"], r["at"], r["box_name"])
                for r in state.sent(conn, self.cf.name, "out")]
        queue = [cl.QueueRow(r["relpath"], r["status"], r["changed_at"] or 0.0)
                 for r in state.queue_rows(conn, self.cf.outgoing.name)]
        batches = cl.batches(queue, sent)
        last = state.logs(conn, self.cf.name)
        self._next_look = float("inf")
        for batch, bs in sorted(batches.items()):
            if self._stop.is_set():
                return
            if self._checked.get(batch, -1.0) >= bs.quiet_since:
                continue   # nothing changed in this batch since it was last handled
            if bs.complete and not bs.due(now, cfg.quiet):   # look again when quiet
                self._next_look = min(self._next_look, bs.quiet_since + cfg.quiet)
            if cl.decide(bs, None, None, None, now, cfg.quiet).action != "write":
                continue
            if now < self._retry_at.get(batch, 0.0):
                self._next_look = min(self._next_look, self._retry_at[batch])
                continue
            try:
                self._write_log(conn, batch, bs, sent, last.get(batch), now)
                self._failures.pop(batch, None)
            except SetupError:
                raise
            except CfboxError as e:   # Box busy/unreachable, or this batch's folder/name
                first = self._failures.get(batch) != str(e)   # say it once, not every 30 s
                self._failures[batch] = str(e)
                self._retry_at[batch] = now + self.retry_delay
                self._next_look = min(self._next_look, now + self.retry_delay)
                if first:
                    log.warning("%s: completion log of %s not written yet: %s; trying again",
                                self.name, batch, e, extra={"fields": {"MAPPING": self.cf.name,
                                                                       "ACTION": "retry", "PATH": batch}})

    def _batch_folder(self, conn, batch: str) -> str | None:
        """The Box folder the outgoing half created for the batch (its cache first)."""
        row = conn.execute("SELECT folder_id FROM out_folders WHERE mapping=? AND reldir=?",
                           (self.cf.outgoing.name, batch)).fetchone()
        if row is not None:
            return row["folder_id"]
        key = casefold_key(batch)
        for it in self.remote.list_folder(self.cf.outgoing.folder_id):
            if it.type == "folder" and casefold_key(it.name) == key:
                return it.id
        return None

    def _box_files(self, folder_id: str, log_name: str) -> tuple[dict[str, str], str | None]:
        """path below the batch folder -> Box SHA-1, and the log file's id if present."""
        files: dict[str, str] = {}
        log_id = None
        stack = [(folder_id, "")]
        while stack:
            fid, prefix = stack.pop()
            for it in self.remote.list_folder(fid):
                self._last_progress = time.monotonic()
                if it.type == "folder":
                    stack.append((it.id, f"{prefix}{it.name}/"))
                elif it.type == "file":
                    if not prefix and casefold_key(it.name) == casefold_key(log_name):
                        log_id = it.id
                    files[f"{prefix}{it.name}"] = it.sha1 or ""
        return files, log_id

    def _write_log(self, conn, batch: str, bs: cl.BatchState, sent, last_row, now: float) -> None:
        cfg = self.cf.completion_log
        name = cl.log_name(cfg.name, batch, self.cf.name)
        folder = self._batch_folder(conn, batch)
        if folder is None:
            raise ItemError(f"the Box folder of batch {batch!r} is not in upload folder "
                            f"{self.cf.outgoing.folder_id} (moved or deleted on Box?)")
        try:
            on_box, log_id = self._box_files(folder, name)
        except NotFoundError:
            raise ItemError(f"the Box folder of batch {batch!r} ({folder}) is gone") from None
        listed = cl.entries(batch, sent, on_box, name)
        data = cl.content(batch, listed)
        d = cl.decide(bs, listed, last_row["fingerprint"] if last_row else None, data, now, cfg.quiet)
        if d.action == "same" and (log_id is not None or not listed):
            state.touch_log(conn, self.cf.name, batch, now)
            self._checked[batch] = bs.quiet_since
            return
        if d.action == "wait" and not listed:
            self._checked[batch] = bs.quiet_since   # nothing of it on Box: look again on change
            return
        sha1 = hashlib.sha1(data).hexdigest()
        item = None
        if log_id is not None:
            try:
                item = self.remote.upload_version(log_id, io.BytesIO(data), size=len(data), sha1=sha1)
            except NotFoundError:
                item = None
        if item is None:
            try:
                item = self.remote.upload_file(folder, name, io.BytesIO(data), size=len(data), sha1=sha1)
            except NameConflictError as e:
                if not e.conflict_id:
                    raise
                item = self.remote.upload_version(e.conflict_id, io.BytesIO(data), size=len(data),
                                                  sha1=sha1)
        state.record_log(conn, self.cf.name, batch, name, item.id, cl.fingerprint(data),
                         len(listed), now)
        self._checked[batch] = bs.quiet_since
        self._logs_today += 1
        self._last_success = time.time()
        log.info("%s: completion log %s/%s lists %d file(s)", self.name, batch, name, len(listed),
                 extra={"fields": {"MAPPING": self.cf.name, "ACTION": "completed",
                                   "PATH": f"{batch}/{name}", "BOX_FILE_ID": item.id,
                                   "SHA1": sha1, "SIZE": len(data)}})

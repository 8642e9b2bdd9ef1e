"""`OutgoingSide`: one watched folder mirrored to one Box folder (the Side protocol).

Threads: one scheduler (start-up reconciliation scan, watch hints, settle checks,
periodic rescans) and `workers` upload workers that claim jobs from the state DB.
Each thread has its own SQLite connection.  Everything the threads decide goes
through the queue in the DB, so a crash, a restart, or a second daemon on the same
folder never changes the outcome: every file ends up on Box once.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import shutil
import sqlite3
import threading
import time
from pathlib import Path

from cfbox_watch import db, names
from cfbox_watch.errors import (ItemError, NameConflictError, NotFoundError,
                                PreconditionFailedError, RetryableError, SetupError)
from cfbox_watch.log import fields
from cfbox_watch.outgoing import planner, settle, state, watcher
from cfbox_watch.outgoing.filters import dir_excluded, file_wanted
from cfbox_watch.outgoing.scanner import FileStat, scan, stat_file
from cfbox_watch.outgoing.uploader import FileChanged, Stopped, Uploader, hash_file
from cfbox_watch.progress import Transfers

log = logging.getLogger("cfbox_watch.outgoing.engine")

HUNG_AFTER = 600.0          # seconds without progress before heartbeat() says hung
ONCE_MAX_ATTEMPTS = 5       # `once` gives a retryable item this many tries (~15 s of backoff)
RENAME_TRIES = 50
# Above this size a new file is preflighted first, so that a same-named file on Box
# (often the very same bytes, sent by another daemon) costs one small call instead
# of sending the whole body only to be told 409.  Below it the 409 is cheaper.
PREFLIGHT_MIN = 1 << 20


class _Outcome(Exception):
    """Internal: a job ended early with a recorded outcome."""


def _case_twin(path: Path, relpath: str) -> str | None:
    """A local file beside this one whose name Box treats as the same (case or Unicode
    normalisation only).  The state DB alone misses it while the twin's upload is still
    in flight on another worker, and the 409 would then turn this file into a new
    version of the twin."""
    key = names.casefold_key(path.name)
    try:
        with os.scandir(path.parent) as it:
            for entry in it:
                if (entry.name != path.name and names.casefold_key(entry.name) == key
                        and entry.is_file(follow_symlinks=False)):
                    reldir = relpath.rpartition("/")[0]
                    return f"{reldir}/{entry.name}" if reldir else entry.name
    except OSError:
        return None
    return None


class OutgoingSide:
    def __init__(self, config, mapping, remote, *, poll_interval: float = 2.0):
        self.config = config
        self.m = mapping
        self.remote = remote
        self.name = f"{mapping.name}:out"
        self.mapping = mapping.name
        self.root = Path(mapping.local)
        self.db_file = db.db_path(config.state_dir)
        self.poll_interval = poll_interval
        self._stop = threading.Event()
        self._folder_lock = threading.RLock()   # see _folder_for
        self._transfers = Transfers()           # large uploads in flight, for status
        self._ready = threading.Event()
        self._rescan = threading.Event()
        self._wake = threading.Condition()
        self._hints: "queue.Queue[watcher.Hint]" = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._observer = None
        self._overflow = None
        self._beats: dict[str, float] = {}
        self._lock = threading.Lock()
        self._state = "idle"
        self._error: str | None = None
        self._reported: set[tuple[str, str]] = set()   # (path, kind) logged once
        self._bad_names_seen = False
        self._rand = random.Random()
        self.once_max_attempts = ONCE_MAX_ATTEMPTS
        self.retry_base = 1.0     # seconds; the first backoff step (tests shorten it)
        self.once_settle_limit: float | None = None   # default max(60 s, 10 x settle_time)
        if hasattr(remote, "register_root"):
            # a 404 on the mapping's own folder means "not shared": stop, don't retry
            remote.register_root(mapping.folder_id, mapping.key_path)
        # relpath -> time of the last write event not yet followed by IN_CLOSE_WRITE
        self._open_writes: dict[str, float] = {}
        self._mode = "none"

    # --- Side protocol ---------------------------------------------------------------
    def start(self) -> None:
        self._state = "starting"
        self._stop.clear()
        t = threading.Thread(target=self._guard, args=("scheduler", self._scheduler),
                             name=f"{self.name}-sched", daemon=True)
        self._threads = [t]
        t.start()
        for i in range(max(1, self.m.workers)):
            w = threading.Thread(target=self._guard, args=(f"worker{i}", self._worker_loop),
                                 name=f"{self.name}-w{i}", daemon=True)
            self._threads.append(w)
            w.start()

    def ready(self) -> bool:
        return self._ready.is_set()

    def request_stop(self) -> None:
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        if self._observer is not None:
            try:
                self._observer.stop()
            except Exception:  # noqa: BLE001
                pass

    def join(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        if self._observer is not None:
            self._observer.join(max(0.0, deadline - time.monotonic()))
        alive = any(t.is_alive() for t in self._threads)
        if not alive and self._state not in ("failed",):
            self._state = "stopped"
        if self._overflow is not None:
            logging.getLogger("watchdog").removeHandler(self._overflow)
        return not alive

    def heartbeat(self) -> bool:
        now = time.monotonic()
        with self._lock:
            return all(now - t < HUNG_AFTER for t in self._beats.values())

    def summary(self) -> dict:
        conn = self._conn_for_summary()
        s = state.summarize(conn, self.mapping, problems_limit=20)
        conn.close()
        s["state"] = self._state
        s["error"] = self._error
        s["transfers"] = self._transfers.snapshot()
        return s

    def run_once(self) -> bool:
        """Scan, wait for files to settle, upload everything ready; True when all arrived."""
        self._state = "running"
        self._stop.clear()
        self._bad_names_seen = False
        conn = self._open()
        # A file that never stops changing (a log being appended) must not keep `once`
        # running forever: it is reported as still settling instead.
        give_up_at = time.time() + (self.once_settle_limit if self.once_settle_limit is not None
                                    else max(60.0, 10 * self.m.settle_time))
        try:
            state.release_stale_claims(conn, self.mapping)
            state.due_now(conn, self.mapping)
            self._full_scan(conn)
            while not self._stop.is_set():
                self._promote_due(conn)
                self._drain_once()
                if self._state == "failed":
                    return False
                if self._once_settled(conn, give_up_at):
                    break
            c = state.counts(conn, self.mapping)
            ok = not self._bad_names_seen and self._state != "failed" and not any(
                c.get(k) for k in ("pending", "settling", "uploading", "failed", "held"))
            return ok
        except SetupError as e:
            self._setup_failed(e)
            return False
        finally:
            conn.close()
            if self._state == "running":
                self._state = "idle"

    # --- once helpers ----------------------------------------------------------------
    def _drain_once(self) -> None:
        threads = [threading.Thread(target=self._guard, args=(f"once{i}", self._drain_worker),
                                    daemon=True) for i in range(max(1, self.m.workers))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def _drain_worker(self) -> None:
        conn = self._open()
        try:
            up = self._uploader(conn)
            while not self._stop.is_set():
                row = state.claim_next(conn, self.mapping, time.time())
                if row is None:
                    return
                self._process(conn, up, row)
        finally:
            conn.close()

    def _once_settled(self, conn, give_up_at: float = float("inf")) -> bool:
        """Sleep until the next settle/retry time; True when nothing is left to wait for."""
        settling_since, next_attempt = state.next_wake(conn, self.mapping)
        waits = []
        if settling_since is not None and time.time() < give_up_at:
            waits.append(settling_since + self.m.settle_time)
        if next_attempt is not None:
            over = conn.execute(
                "SELECT COUNT(*) FROM out_files WHERE mapping=? AND status='pending' AND attempts<?",
                (self.mapping, self.once_max_attempts)).fetchone()[0]
            if over:
                waits.append(next_attempt)
        if not waits:
            return True
        delay = min(waits) - time.time()
        if delay > 0:
            self._stop.wait(delay)
        return False

    # --- threads ---------------------------------------------------------------------
    def _guard(self, name: str, fn) -> None:
        """A thread's unexpected exception fails the side visibly, never silently."""
        self._beat(name)
        try:
            fn()
        except SetupError as e:
            self._setup_failed(e)
        except Exception as e:  # noqa: BLE001 - a bug; keep the traceback in the log
            log.exception("%s: internal error in %s", self.name, name)
            self._state = "failed"
            self._error = f"internal error: {e.__class__.__name__}: {e}"
            self.request_stop()
        finally:
            with self._lock:
                self._beats.pop(name, None)

    def _beat(self, name: str | None = None) -> None:
        name = name or threading.current_thread().name
        with self._lock:
            self._beats[name] = time.monotonic()

    def _open(self) -> sqlite3.Connection:
        conn = db.open_db(self.db_file)
        state.init(conn)
        return conn

    def _conn_for_summary(self) -> sqlite3.Connection:
        if not self.db_file.exists():
            conn = sqlite3.connect(":memory:")
            conn.row_factory = sqlite3.Row
            return conn
        return db.open_db(self.db_file, readonly=True)

    def _uploader(self, conn) -> Uploader:
        return Uploader(self.remote, conn, self.mapping, part_workers=self.m.part_workers,
                        stop=self._stop, beat=self._beat, transfers=self._transfers)

    def _setup_failed(self, e: SetupError) -> None:
        if self._state != "failed":
            log.error("%s: stopped: %s", self.name, e,
                      extra=fields(MAPPING=self.mapping, ACTION="failed"))
        self._state = "failed"
        self._error = str(e)
        self.request_stop()

    def _scheduler(self) -> None:
        conn = self._open()
        try:
            if not self.root.is_dir():
                raise SetupError(f"{self.m.key_path}: local folder {self.root} does not exist "
                                 "or is not a folder; create it or fix the path")
            state.release_stale_claims(conn, self.mapping)
            self._start_watch()
            self._full_scan(conn)
            self._state = "running"
            self._ready.set()
            last_scan = time.monotonic()
            while not self._stop.is_set():
                self._beat("scheduler")
                settling_since, _ = state.next_wake(conn, self.mapping)
                timeout = 1.0
                if settling_since is not None:
                    timeout = max(0.2, min(timeout, settling_since + self.m.settle_time - time.time()))
                try:
                    hint = self._hints.get(timeout=timeout)
                    self._handle_hints(conn, hint)
                except queue.Empty:
                    pass
                if self._rescan.is_set() or time.monotonic() - last_scan >= self.m.rescan_interval:
                    self._rescan.clear()
                    self._full_scan(conn)
                    last_scan = time.monotonic()
                if self._promote_due(conn):
                    with self._wake:
                        self._wake.notify_all()
        finally:
            conn.close()

    def _start_watch(self) -> None:
        fstype = watcher.fs_type_for(str(self.root.resolve()), watcher.read_mounts())
        mode = watcher.choose_mode(self.m.watch, fstype)
        self._mode = mode
        if self.m.watch == "auto" and mode == "poll":
            log.info("%s: %s is on %s; watching by polling (inotify misses changes made by "
                     "other machines)", self.name, self.root, fstype,
                     extra=fields(MAPPING=self.mapping))
        self._overflow = watcher.OverflowDetector(self._rescan.set)
        logging.getLogger("watchdog").addHandler(self._overflow)
        handler = watcher.HintHandler(self.root, self._hints)
        self._observer = watcher.make_observer(mode, self.root, handler, self.poll_interval)
        try:
            self._observer.start()
        except OSError as e:
            if mode == "poll":
                raise
            # Typically fs.inotify.max_user_watches exhausted by a huge tree: polling
            # is slower to notice but loses nothing.
            log.warning("%s: inotify unavailable for %s (%s); watching by polling instead; "
                        "raising fs.inotify.max_user_watches restores instant pick-up",
                        self.name, self.root, e.strerror or e, extra=fields(MAPPING=self.mapping))
            self._mode = "poll"
            self._observer = watcher.make_observer("poll", self.root, handler, self.poll_interval)
            self._observer.start()

    def _worker_loop(self) -> None:
        conn = self._open()
        name = threading.current_thread().name
        try:
            up = self._uploader(conn)
            while not self._stop.is_set():
                self._beat()
                row = state.claim_next(conn, self.mapping, time.time())
                if row is None:
                    with self._wake:
                        self._wake.wait(1.0)
                    continue
                self._process(conn, up, row)
        finally:
            conn.close()
            with self._lock:
                self._beats.pop(name, None)

    # --- discovery ---------------------------------------------------------------------
    def _full_scan(self, conn, start: str = "") -> None:
        if not self.root.is_dir():
            raise SetupError(f"{self.m.key_path}: local folder {self.root} does not exist "
                             "or is not a folder; create it or fix the path")
        snap = scan(self.root, self.m.include, self.m.exclude, start=start)
        now = time.time()
        for path, kind, reason in snap.skipped:
            self._report_skip(conn, path, kind, reason)
        for rel, st in snap.files.items():
            self._see(conn, st, now)
        present = set(snap.files) | {p for p, kind, _ in snap.skipped if kind == "badname"}
        state.vanished(conn, self.mapping, present, under=(start,),
                       keep_under=snap.unreadable)

    def _handle_hints(self, conn, first: watcher.Hint) -> None:
        ordered = [first]   # order matters for write/close pairs; duplicates do not
        while True:
            try:
                ordered.append(self._hints.get_nowait())
            except queue.Empty:
                break
        now = time.time()
        for h in ordered:
            if self._mode != "inotify":
                break  # polling never reports a close
            if h.write == "write":
                self._open_writes[h.relpath] = now
            elif h.write == "closed":
                self._open_writes.pop(h.relpath, None)
        seen: set[tuple[str, bool]] = set()
        for h in sorted(ordered, key=lambda h: h.relpath):
            if (h.relpath, h.is_dir) in seen:
                continue
            seen.add((h.relpath, h.is_dir))
            if not self._inside_root(h.relpath):
                continue  # reached through a symlink: never followed out of the root
            if h.relpath == "" or h.is_dir or (self.root / h.relpath).is_dir():
                if dir_excluded(h.relpath, self.m.exclude):
                    continue
                if h.relpath == "" or (self.root / h.relpath).is_dir():
                    self._full_scan(conn, start=h.relpath)
                else:
                    state.vanished(conn, self.mapping, set(), under=(h.relpath,))
                continue
            parent = h.relpath.rpartition("/")[0]
            if not file_wanted(h.relpath, self.m.include, self.m.exclude) or (
                    parent and dir_excluded(parent, self.m.exclude)):
                continue
            path = self.root / h.relpath
            if path.is_symlink():
                self._report_skip(conn, h.relpath, "symlink", "symbolic links are not followed")
                continue
            st = stat_file(self.root, h.relpath)
            if st is None:
                r = state.get(conn, self.mapping, h.relpath)
                if r is not None and planner.on_vanished(state.planner_row(r)) == "delete":
                    state.delete(conn, self.mapping, h.relpath)
                continue
            self._see(conn, st, now)

    def _inside_root(self, relpath: str) -> bool:
        """True when no component of `relpath` is a symlink (the path resolves in place)."""
        if relpath == "":
            return True
        real_root = os.path.realpath(self.root)
        parent = os.path.dirname(relpath)
        return os.path.realpath(os.path.join(self.root, parent)) == os.path.normpath(
            os.path.join(real_root, parent)) and not os.path.islink(self.root / relpath)

    def _see(self, conn, st: FileStat, now: float) -> None:
        problem = self._name_problem(st.relpath)
        if problem:
            self._report_skip(conn, st.relpath, "badname", problem, st)
            return
        state.observe(conn, self.mapping, st, now)

    def _name_problem(self, relpath: str) -> str | None:
        for part in relpath.split("/"):
            p = names.box_name_problem(part)
            if p:
                return f"{part!r}: {p}"
        return None

    def _report_skip(self, conn, path: str, kind: str, reason: str, st=None) -> None:
        if kind == "badname":
            self._bad_names_seen = True
            if state.record_skip(conn, self.mapping, path, reason, st):
                log.warning("%s: skipped %s: %s; rename the file to have it sent", self.name,
                            path, reason, extra=fields(MAPPING=self.mapping, ACTION="skipped",
                                                       PATH=path))
            return
        key = (path, kind)
        if key not in self._reported:
            self._reported.add(key)
            log.info("%s: ignored %s: %s", self.name, path, reason,
                     extra=fields(MAPPING=self.mapping, ACTION="ignored", PATH=path))

    def _still_open(self, relpath: str, now: float) -> bool:
        """inotify saw writes but no close yet: a writer may only be pausing.

        Bounded, because a close can be lost (queue overflow, or a writer on another
        host of a share that happens to deliver write events).
        """
        t = self._open_writes.get(relpath)
        if t is None:
            return False
        if now - t > max(60.0, 10 * self.m.settle_time):
            self._open_writes.pop(relpath, None)
            return False
        return True

    def _promote_due(self, conn) -> bool:
        """Settling rows whose file stood still for settle_time become pending (or held)."""
        now = time.time()
        promoted = False
        for r in state.settling(conn, self.mapping):
            if r["stable_since"] + self.m.settle_time > now:
                continue
            if self._still_open(r["relpath"], now):
                continue
            st = stat_file(self.root, r["relpath"])
            p = planner.promote(state.planner_row(r), st, now, self.m.settle_time)
            if p.action == "gone":
                state.delete(conn, self.mapping, r["relpath"])
            elif p.action == "restart":
                state.restart_settle(conn, self.mapping, st, now)
            elif p.action == "ready":
                problem = settle.image_problem(self.root / r["relpath"], st.size) \
                    if self.m.check_images else None
                if problem:
                    if state.set_status(conn, self.mapping, r["relpath"], "held",
                                        expect="settling", last_error=problem):
                        log.warning("%s: held back %s: %s; it is sent once the file changes",
                                    self.name, r["relpath"], problem,
                                    extra=fields(MAPPING=self.mapping, ACTION="held",
                                                 PATH=r["relpath"], SIZE=st.size))
                else:
                    promoted |= state.set_status(conn, self.mapping, r["relpath"], "pending",
                                                 expect="settling", next_attempt=0)
        return promoted

    # --- one job -------------------------------------------------------------------------
    def _process(self, conn, up: Uploader, row: sqlite3.Row) -> None:
        rel = row["relpath"]
        t0 = time.monotonic()
        try:
            self._upload_job(conn, up, row, t0)
        except _Outcome:
            pass
        except Stopped:
            state.set_status(conn, self.mapping, rel, "pending", expect="uploading")
        except FileChanged:
            log.info("%s: %s changed while it was being sent; it is sent once it settles",
                     self.name, rel, extra=fields(MAPPING=self.mapping, ACTION="requeued", PATH=rel))
            up.abandon(rel)
            st = stat_file(self.root, rel)
            if st is None:
                state.delete(conn, self.mapping, rel)
            else:
                state.restart_settle(conn, self.mapping, st, time.time())
        except RetryableError as e:
            attempts = row["attempts"] + 1
            delay = planner.backoff(attempts, e.retry_after, self._rand.random(),
                                    base=self.retry_base)
            state.set_status(conn, self.mapping, rel, "pending", expect="uploading",
                             attempts=attempts, next_attempt=time.time() + delay,
                             last_error=str(e))
            # Retries are summarized: the 1st, 3rd and every 10th attempt reach the
            # journal, the rest only the debug log, so an outage is not a flood of lines.
            level = logging.INFO if attempts in (1, 3) or attempts % 10 == 0 else logging.DEBUG
            log.log(level, "%s: %s will be retried in %.0f s (attempt %d): %s", self.name, rel,
                    delay, attempts, e, extra=fields(MAPPING=self.mapping, ACTION="retry", PATH=rel))
        except SetupError as e:
            state.set_status(conn, self.mapping, rel, "pending", expect="uploading",
                             last_error=str(e))
            self._setup_failed(e)
        except ItemError as e:
            self._fail(conn, row, str(e), t0)
        except OSError as e:
            if stat_file(self.root, rel) is None:
                state.delete(conn, self.mapping, rel)
                return
            self._fail(conn, row, f"could not read the file: {e.strerror or e}", t0)
        except Exception as e:  # noqa: BLE001 - one bad file must not stop the others
            log.exception("%s: internal error on %s", self.name, rel)
            self._fail(conn, row, f"internal error: {e.__class__.__name__}", t0)

    def _fail(self, conn, row, message: str, t0: float) -> None:
        rel = row["relpath"]
        state.set_status(conn, self.mapping, rel, "failed", expect="uploading",
                         attempts=row["attempts"] + 1, last_error=message)
        log.error("%s: failed %s: %s", self.name, rel, message,
                  extra=fields(MAPPING=self.mapping, ACTION="failed", PATH=rel,
                               SIZE=row["size"], DURATION_MS=_ms(t0)))

    def _upload_job(self, conn, up: Uploader, row: sqlite3.Row, t0: float) -> None:
        rel = row["relpath"]
        path = str(self.root / rel)
        st = stat_file(self.root, rel)
        if st is None:
            up.abandon(rel)
            state.delete(conn, self.mapping, rel)
            raise _Outcome()
        if (st.size, st.mtime_ns, st.inode) != (row["size"], row["mtime_ns"], row["inode"]):
            state.restart_settle(conn, self.mapping, st, time.time())
            raise _Outcome()
        problem = self._name_problem(rel)
        if problem:
            state.set_status(conn, self.mapping, rel, "skipped", last_error=problem)
            raise _Outcome()
        reldir, _, name = rel.rpartition("/")
        prow = state.planner_row(row)
        chunked = st.size >= self.m.chunked_threshold
        sha1 = None
        if not chunked or row["box_file_id"]:
            sha1 = hash_file(path, self._beat)
        kind = planner.plan_upload(prow, sha1 or "", self.m.on_conflict)
        file_id, etag = row["box_file_id"], row["etag"]
        sent: int | None = None      # bytes sent; None when Box already had the content
        if kind == "already":
            item = None
        elif kind == "skip":
            self._skip_conflict(conn, row, st, t0, "changed locally")
        else:
            parent_id = self._folder_for(conn, reldir)
            try:
                item, sha1, sent = self._send(conn, up, path, st, parent_id, name, kind, sha1,
                                              file_id, etag, t0, row)
            except NotFoundError:
                if reldir == "":
                    raise SetupError(
                        f"{self.m.key_path}: Box folder {self.m.folder_id} was not found; check "
                        "the folder id and that the folder is shared with the app's service "
                        "account") from None
                state.forget_folder(conn, self.mapping, reldir)
                raise RetryableError(f"Box folder for {reldir} vanished; will recreate it") from None
        self._finish(conn, up, row, st, item, sha1, sent, t0)

    def _send(self, conn, up, path, st, parent_id, name, kind, sha1, file_id, etag, t0, row):
        """Upload per the plan, resolving name conflicts; returns (item, sha1, bytes sent)."""
        chunked = st.size >= self.m.chunked_threshold

        def new(target_name):
            if chunked:
                r = up.chunked(path, st, parent_id=parent_id, name=target_name)
                return r.item, r.sha1, r.sent_bytes
            return up.direct_new(path, st, parent_id, target_name, sha1), sha1, st.size

        def version(fid, if_match):
            if chunked:
                r = up.chunked(path, st, parent_id=parent_id, name=name, file_id=fid,
                               if_match=if_match)
                return r.item, r.sha1, r.sent_bytes
            return up.direct_version(path, st, fid, sha1, if_match), sha1, st.size

        if kind == "version":
            try:
                return version(file_id, etag)
            except PreconditionFailedError:
                # Someone changed the Box file since our last upload: read it again.
                remote = self.remote.get_file(file_id)
                if remote.sha1 and sha1 and remote.sha1.lower() == sha1.lower():
                    return remote, sha1, None
                return version(file_id, remote.etag)
            except NotFoundError:
                # The Box file was deleted or moved away: send this as a new file.
                kind = "new"
        if kind == "rename":
            return self._send_renamed(conn, up, path, st, parent_id, name, sha1, new, t0, row)
        try:
            if not chunked and st.size >= PREFLIGHT_MIN:
                self.remote.preflight(parent_id, name, st.size)
            return new(name)
        except NameConflictError as e:
            if e.conflict_type == "folder":
                raise ItemError(f"Box already has a folder named {name!r} there; "
                                "rename the file or the Box folder") from None
            if sha1 is None:
                sha1 = hash_file(path, self._beat)
                up.abandon(st.relpath)
            remote_sha1 = e.conflict_sha1
            cid, cetag = e.conflict_id, e.conflict_etag
            other = state.other_owner(conn, self.mapping, cid, st.relpath) if cid else None
            if other is None:
                other = _case_twin(Path(path), st.relpath)
            if other is not None:
                raise ItemError(f"Box names ignore case: {st.relpath!r} and {other!r} would be "
                                "the same Box file; rename one of them") from None
            if remote_sha1 is None and cid:
                remote = self.remote.get_file(cid)
                remote_sha1, cetag = remote.sha1, remote.etag
            decision = planner.on_name_conflict(sha1, remote_sha1, self.m.on_conflict)
            if decision == "already":
                item = self.remote.get_file(cid) if cid else None
                return item, sha1, None
            if decision == "skip":
                self._skip_conflict(conn, row, st, t0, "Box has a different file of that name")
            if decision == "rename":
                return self._send_renamed(conn, up, path, st, parent_id, name, sha1, new, t0, row)
            if not cid:
                raise RetryableError(f"Box reported a name conflict for {name!r} without the "
                                     "conflicting file; will look again") from None
            file_id = cid
            try:
                return version(cid, cetag)
            except PreconditionFailedError:
                remote = self.remote.get_file(cid)
                return version(cid, remote.etag)

    def _send_renamed(self, conn, up, path, st, parent_id, name, sha1, new, t0, row):
        if sha1 is None:
            sha1 = hash_file(path, self._beat)
        for n in range(1, RENAME_TRIES + 1):
            candidate = planner.renamed(name, n)
            try:
                return new(candidate)
            except NameConflictError as e:
                rs = e.conflict_sha1
                if rs is None and e.conflict_id and e.conflict_type != "folder":
                    rs = self.remote.get_file(e.conflict_id).sha1
                if rs and rs.lower() == sha1.lower():
                    return self.remote.get_file(e.conflict_id), sha1, None
                up.abandon(st.relpath)
        raise ItemError(f"no free name found after {RENAME_TRIES} renames of {name!r}")

    def _skip_conflict(self, conn, row, st, t0, why: str) -> None:
        rel = row["relpath"]
        msg = f"{why}; on_conflict is skip"
        state.set_status(conn, self.mapping, rel, "skipped", expect="uploading", last_error=msg,
                         size=st.size, mtime_ns=st.mtime_ns, inode=st.inode)
        log.info("%s: skipped %s: %s", self.name, rel, msg,
                 extra=fields(MAPPING=self.mapping, ACTION="skipped", PATH=rel,
                              DURATION_MS=_ms(t0)))
        raise _Outcome()

    def _folder_for(self, conn, reldir: str) -> str:
        """The Box folder id for a relative directory, created on demand and cached."""
        if reldir == "":
            return self.m.folder_id
        fid = state.folder_id(conn, self.mapping, reldir)
        if fid is not None:
            return fid
        # One creator per side: workers uploading into the same new folder would each
        # create it and resolve the 409 (3x the calls measured by the benchmark).  Other
        # daemons still race us; create_folder resolves that 409 to the existing folder.
        with self._folder_lock:
            fid = state.folder_id(conn, self.mapping, reldir)
            if fid is not None:
                return fid
            parent, _, base = reldir.rpartition("/")
            parent_id = self._folder_for(conn, parent)
            try:
                item = self.remote.create_folder(parent_id, base)
            except NotFoundError:
                state.forget_folder(conn, self.mapping, parent)
                raise RetryableError(f"Box folder for {parent or '(root)'} vanished; "
                                     "will recreate it") from None
            state.put_folder_id(conn, self.mapping, reldir, item.id)
            return item.id

    def _finish(self, conn, up, row, st, item, sha1, sent, t0) -> None:
        rel = row["relpath"]
        if item is not None and item.sha1 and sha1 and item.sha1.lower() != sha1.lower():
            raise RetryableError(f"Box reports SHA-1 {item.sha1} for {rel}, we sent {sha1}; "
                                 "sending again")
        file_id = item.id if item is not None else row["box_file_id"]
        etag = item.etag if item is not None else row["etag"]
        version_id = item.version_id if item is not None else row["version_id"]
        box_name = item.name if item is not None else row["box_name"]
        after = stat_file(self.root, rel)
        now = time.time()
        if after is not None and not settle.same_stat(st, after):
            # Changed while we sent it: what Box holds is recorded (so the next upload
            # is a version), and the new content waits for its own settle time.
            state.set_status(conn, self.mapping, rel, "settling", expect="uploading",
                             sha1=sha1, box_file_id=file_id, etag=etag, version_id=version_id,
                             box_name=box_name, stable_since=now, size=after.size,
                             mtime_ns=after.mtime_ns, inode=after.inode)
            log.info("%s: %s changed during upload; a new version follows", self.name, rel,
                     extra=fields(MAPPING=self.mapping, ACTION="requeued", PATH=rel))
            raise _Outcome()
        if after is not None:
            self._after_upload(rel)
        state.set_status(conn, self.mapping, rel, "done", expect="uploading", sha1=sha1,
                         box_file_id=file_id, etag=etag, version_id=version_id,
                         box_name=box_name, attempts=0, last_error=None, done_at=now,
                         size=st.size, mtime_ns=st.mtime_ns, inode=st.inode)
        action = "uploaded" if sent is not None else "unchanged"
        log.info("%s: %s %s", self.name, action, rel,
                 extra=fields(MAPPING=self.mapping, ACTION=action, PATH=rel, BOX_FILE_ID=file_id,
                              SHA1=sha1, SIZE=st.size, DURATION_MS=_ms(t0)))

    def _after_upload(self, rel: str) -> None:
        """Called only once Box confirmed the SHA-1: move or delete the local file."""
        src = self.root / rel
        if self.m.after_upload == "delete":
            src.unlink(missing_ok=True)
        elif self.m.after_upload == "move" and self.m.sent_dir is not None:
            dst = Path(self.m.sent_dir) / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(src), str(dst))


def _ms(t0: float) -> int:
    return int((time.monotonic() - t0) * 1000)

"""IncomingSide: one Box Download folder pulled into one local `incoming` folder.

Threads (daemon mode): a poller that lists the Download tree every poll_interval (and
sooner when the event loop asks), `workers` download workers fed from the state DB
queue, and, with `long_poll: true`, a subscription to the connection's one shared
event loop (incoming.events).  Scans decide, events accelerate: only a listing ever
queues a file.

Listing cost: Box does not document that a folder's etag or modified_at changes when
something changes deeper below it, so skipping unchanged-looking subtrees could miss a
vendor's file.  Each listing therefore walks the tree, at one call per folder page
(1000 items); the per-folder state is kept in the DB for the event loop's tree checks.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import threading
import unicodedata
from collections.abc import Mapping
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cfbox_watch.config_model import Config, IncomingMapping
from cfbox_watch.creative_force.roundtrip import accepted
from cfbox_watch.db import db_path, open_db
from cfbox_watch.progress import Transfers
from cfbox_watch.errors import (
    BoxError, CfboxError, ItemError, NameConflictError, NotFoundError, RetryableError, SetupError,
)
from cfbox_watch.incoming import downloader, state
from cfbox_watch.incoming import events
from cfbox_watch.incoming.events import TreeMembership
from cfbox_watch.incoming.planner import (
    LocalEntry, RemoteFile, backoff_delay, local_parts, needs_work, plan_placement,
    show_name, split_ext,
)

log = logging.getLogger("cfbox_watch.incoming.engine")

ONCE_ATTEMPTS = 3          # attempts per item inside one `once` pass
ONCE_MAX_SLEEP = 15.0      # longest in-pass wait before such a retry
REPLAN_LIMIT = 5
RETRY_BASE = 5.0           # backoff of a failed item: 5 s, 10 s, 20 s ... (cap 15 min), +-50 %
STALL_SECONDS = 600.0      # a transfer or listing page silent this long makes heartbeat() False


class _Beat:
    """Per-thread progress marks for heartbeat(): (last progress, allowed silence)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._marks: dict[str, tuple[float, float]] = {}

    def __call__(self, allowed: float) -> None:
        with self._lock:
            self._marks[threading.current_thread().name] = (time.monotonic(), allowed)

    def drop(self) -> None:
        with self._lock:
            self._marks.pop(threading.current_thread().name, None)

    def healthy(self) -> bool:
        now = time.monotonic()
        with self._lock:
            return all(now - t <= allowed for t, allowed in self._marks.values())


class _DirView(Mapping):
    """The destination folder as the planner sees it: NFC name -> LocalEntry.

    Looks up only the names the planner asks about (the target, keep-both candidates,
    our earlier copy), in NFC and NFD spelling, instead of listing a folder that may
    hold thousands of returned files for every download.  Other normalisation forms
    are not matched; the no-clobber link still never overwrites them.
    """

    def __init__(self, path: Path):
        self.path = path
        self._seen: dict[str, LocalEntry | None] = {}

    def _lookup(self, key: str) -> LocalEntry | None:
        if key in self._seen:
            return self._seen[key]
        found = None
        for cand in dict.fromkeys((key, unicodedata.normalize("NFD", key))):
            try:
                st = os.lstat(self.path / cand)
            except OSError:
                continue
            found = LocalEntry(cand, stat.S_ISREG(st.st_mode), st.st_size, st.st_mtime_ns)
            break
        self._seen[key] = found
        return found

    def __getitem__(self, key: str) -> LocalEntry:
        found = self._lookup(key)
        if found is None:
            raise KeyError(key)
        return found

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._lookup(key) is not None

    def __iter__(self):
        raise TypeError("a destination folder view cannot be listed")

    def __len__(self) -> int:
        raise TypeError("a destination folder view cannot be listed")


class IncomingSide:
    def __init__(self, config: Config, mapping: IncomingMapping, remote):
        self.config = config
        self.m = mapping
        self.remote = remote
        self.name = f"{mapping.name}:in"
        self.mapping = mapping.name
        self.root = Path(mapping.local)
        self.db_path = db_path(config.state_dir)
        self._stop = threading.Event()
        self._transfers = Transfers()   # large downloads in flight, for status
        self._wake_poller = threading.Event()
        self._wake_workers = threading.Event()
        self._requests_lock = threading.Lock()
        self._requested: set[str] = set()
        self._threads: list[threading.Thread] = []
        self._ready = False
        self._state = "idle"
        self._error: str | None = None
        self._beat = _Beat()
        self._archive_ids: dict[str, str] = {}
        self._archive_lock = threading.Lock()
        self._gid: int | None = None
        self._events: events.ConnectionEvents | None = None
        self.once_retry_cap = ONCE_MAX_SLEEP  # tests shorten the in-pass retry wait
        self.retry_base = RETRY_BASE          # first backoff step of a failed item, seconds
        self.stall_seconds = STALL_SECONDS    # no byte / no page for this long = hung
        register = getattr(remote, "register_root", None)
        if register is not None:  # a 404 on these means "not shared", not "item vanished"
            register(mapping.folder_id, f"{mapping.key_path}.download_folder_id ({mapping.folder_id})")
            if mapping.archive_folder_id:
                register(mapping.archive_folder_id,
                         f"{mapping.key_path}.archive_folder_id ({mapping.archive_folder_id})")
            if mapping.invalid_folder_id:
                register(mapping.invalid_folder_id,
                         f"{mapping.key_path}.invalid_folder_id ({mapping.invalid_folder_id})")

    # -- Side protocol -------------------------------------------------------------

    def start(self) -> None:
        conn = open_db(self.db_path)
        try:
            self._prepare(conn)
        except SetupError as e:
            self._fail(e)
            return
        finally:
            conn.close()
        self._state = "running"
        self._spawn(self._poll_loop, "poll")
        for i in range(max(1, self.m.workers)):
            self._spawn(self._worker_loop, f"worker{i}")
        if self.m.long_poll:
            tree = TreeMembership(self.remote, self.m.folder_id, self._known_folders,
                                  skip_ids=[self.m.archive_folder_id] if self.m.archive_folder_id else ())
            self._events = events.subscribe(self.remote, self.db_path, self.m.connection, self.name,
                                            tree, self.request_scan)
        self._ready = True  # the poller's first act is the start-up listing

    def ready(self) -> bool:
        return self._ready

    def request_stop(self) -> None:
        self._leave_events()
        self._stop.set()
        self._wake_poller.set()
        self._wake_workers.set()

    def join(self, timeout: float) -> bool:
        # The connection's event loop may sit in a long-poll (up to ~10 min); it is
        # not this Side's thread, touches no files, and is a daemon thread.
        deadline = time.monotonic() + timeout
        mine = list(self._threads)
        for t in mine:
            t.join(max(0.0, deadline - time.monotonic()))
        alive = [t for t in mine if t.is_alive()]
        if not alive and self._state == "running":
            self._state = "stopped"
        return not alive

    def heartbeat(self) -> bool:
        hub = self._events
        return self._beat.healthy() and (hub is None or hub.healthy())

    def _leave_events(self) -> None:
        hub, self._events = self._events, None
        if hub is not None:
            events.unsubscribe(hub, self.name)

    def summary(self) -> dict:
        try:
            conn = open_db(self.db_path)
            try:
                s = state.summarize(conn, self.mapping)
            finally:
                conn.close()
        except Exception as e:  # status must never take the daemon down
            s = {"queued": 0, "active": 0, "failed": 0, "done_today": 0, "last_success": None}
            self._error = self._error or f"cannot read the state DB: {e}"
        s["state"] = self._state
        s["error"] = self._error
        s["transfers"] = self._transfers.snapshot()
        return s

    def request_scan(self, folder_ids: set[str] | None = None) -> None:
        """Ask the poller for a listing (of these folders' subtrees, or of everything)."""
        with self._requests_lock:
            self._requested.update(folder_ids or {self.m.folder_id})
        self._wake_poller.set()

    def run_once(self) -> bool:
        conn = open_db(self.db_path)
        try:
            try:
                self._prepare(conn)
                self._finish_after_actions(conn)
                if not self._scan_with_retries(conn):
                    return False
            except SetupError as e:
                self._fail(e)
                return False
            self._state = "running"
            ids = state.due(conn, self.mapping, None, limit=1_000_000)
            with ThreadPoolExecutor(max_workers=max(1, self.m.workers),
                                    thread_name_prefix=f"{self.name}:once") as pool:
                results = list(pool.map(self._once_item, ids))
            if any(r == "setup" for r in results):
                return False
            try:
                self._finish_after_actions(conn)
            except SetupError as e:
                self._fail(e)
                return False
            s = state.summarize(conn, self.mapping)
            self._state = "stopped"
            return s["queued"] == 0 and s["failed"] == 0 and s["active"] == 0 and s["after_pending"] == 0
        finally:
            conn.close()

    # -- set-up -----------------------------------------------------------------------

    def _fail(self, e: CfboxError) -> None:
        self._leave_events()
        self._state = "error"
        self._error = str(e)
        self._stop.set()
        self._wake_workers.set()
        log.error("%s stopped: %s", self.name, e, extra={"fields": {"MAPPING": self.mapping}})

    def _prepare(self, conn) -> None:
        state.ensure(conn)
        try:
            self._gid = downloader.resolve_gid(self.m.group)
        except downloader.LocalWriteError as e:
            raise SetupError(f"{self.m.key_path}.group: {e}") from None
        try:
            os.makedirs(self.root, exist_ok=True)
        except OSError as e:
            raise SetupError(f"{self.m.key_path}.incoming: {downloader.disk_advice(e, self.root.parent)}") from None
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise SetupError(f"{self.m.key_path}.incoming: cannot write into {self.root}; give the "
                             "cfbox-watch service user write permission on that folder")
        for p in downloader.clean_temporaries(self.root):
            log.info("removed stale download temporary %s", p)
        n = state.reset_active(conn, self.mapping)
        if n:
            log.info("%s: %d download(s) interrupted by a restart are queued again", self.name, n)

    def _spawn(self, target, suffix: str) -> None:
        t = threading.Thread(target=self._guard, args=(target,), name=f"{self.name}:{suffix}",
                             daemon=True)
        self._threads.append(t)
        t.start()

    def _guard(self, target) -> None:
        try:
            target()
        except SetupError as e:
            self._fail(e)
        except Exception:
            log.exception("%s: internal error in %s (a bug; please report)", self.name,
                          threading.current_thread().name)
            self._state = "error"
            self._error = "internal error; see the log"
        finally:
            self._beat.drop()

    def _known_folders(self) -> dict[str, str]:
        conn = open_db(self.db_path)
        try:
            return state.folder_paths(conn, self.mapping)
        finally:
            conn.close()

    # -- listing ----------------------------------------------------------------------

    def _root_missing(self) -> SetupError:
        return SetupError(
            f"{self.m.key_path}.download_folder_id: Box folder {self.m.folder_id} is not visible to "
            "the app's service account; share (collaborate) that folder with the service account "
            "as Editor, or fix the folder id")

    def scan(self, conn, start_id: str | None = None, *, shallow: bool = False) -> int:
        """List the subtree of `start_id` (default: the whole Download folder), queue
        what needs fetching; returns the number of items queued.

        `shallow` (event-triggered): list `start_id` itself and descend only into
        folders the last listing did not know (a vendor's new folder); the periodic
        full listing still covers everything."""
        known = state.folder_paths(conn, self.mapping)
        if start_id is None or start_id not in known:
            start_id, shallow = self.m.folder_id, shallow and self.m.folder_id in known
        start_rel = known.get(start_id, "")
        rel0 = tuple(start_rel.split("/")) if start_rel else ()
        folders = [(start_id, start_rel, None, None, None)]
        stack = [(start_id, rel0)]
        recs = state.records(conn, self.mapping)
        queued = 0
        complete = False
        try:
            while stack:
                fid, rel = stack.pop()
                try:
                    items = list(self.remote.list_folder(fid))
                except NotFoundError:
                    if fid == self.m.folder_id:
                        raise self._root_missing() from None
                    continue  # removed while we walked
                except (RetryableError, SetupError):
                    raise
                except ItemError as e:
                    if fid == self.m.folder_id:
                        raise
                    log.warning("%s: cannot list Box folder %s (%s): %s; its files wait for the next "
                                "listing", self.name, "/".join(rel), fid, e,
                                extra={"fields": {"MAPPING": self.mapping}})
                    continue
                self._beat(self.stall_seconds)
                files: list[RemoteFile] = []
                for it in items:
                    if it.type == "folder":
                        if it.id in (self.m.archive_folder_id, self.m.invalid_folder_id):
                            continue  # an archive inside the tree must not feed back
                        sub = rel + (it.name,)
                        folders.append((it.id, "/".join(sub), fid, it.etag, it.modified_at))
                        if not shallow or known.get(it.id) != "/".join(sub):
                            stack.append((it.id, sub))
                    elif it.type == "file":
                        files.append(RemoteFile(it.id, rel + (it.name,), it.sha1, it.version_id,
                                                it.size, fid))
                # Queue per folder as listed: a walk cut short by a Box hiccup still
                # hands over what it saw, so a flaky connection makes progress.
                n = self._queue_files(conn, recs, files)
                if n:
                    queued += n
                    self._wake_workers.set()
                if self._stop.is_set():
                    return queued
            complete = True
        finally:
            # Only a complete walk may forget folders that were not seen.
            state.save_folders(conn, self.mapping, folders,
                               replace_under=start_rel if complete and not shallow else None)
        return queued

    def _queue_files(self, conn, recs: dict, files: list[RemoteFile]) -> int:
        queued = 0
        for rf in files:
            rec = recs.get(rf.file_id)
            if not needs_work(rf, rec):
                if rec is not None and rec.box_path != "/".join(rf.box_path):
                    state.note_seen(conn, self.mapping, rf)
                continue
            if not accepted(rf.box_path[-1], self.m.accept):
                self._not_accepted(conn, rf)
                continue
            parts, problem = local_parts(rf.box_path)
            if problem is not None:
                if rec is None or rec.status != "rejected" or rec.box_path != "/".join(rf.box_path):
                    state.reject(conn, self.mapping, rf, problem)
                    log.warning("not downloading %s: %s; rename it on Box", show_name("/".join(rf.box_path), 120),
                                problem, extra={"fields": self._fields("failed", "/".join(rf.box_path), rf)})
                continue
            state.enqueue(conn, self.mapping, rf)
            queued += 1
        return queued

    def _not_accepted(self, conn, rf: RemoteFile) -> None:
        """A return whose name the studio does not take (`accept`, docs/creative-force.md):
        never downloaded; moved on Box into `invalid_folder_id` keeping its path (the
        `_CF-Invalid-Files` role) and reported.  A move that fails is tried again at the
        next listing; without an invalid folder the file stays and is looked at again
        when renamed on Box."""
        path = "/".join(rf.box_path)
        reason = "name not accepted (accept: " + ", ".join(self.m.accept) + ")"
        status = "rejected"
        if self.m.invalid_folder_id:
            try:
                parent = self.m.invalid_folder_id
                for name in rf.box_path[:-1]:
                    parent = self.remote.create_folder(parent, name).id  # 409 -> the existing one
                stem, ext = split_ext(rf.box_path[-1])
                for n in range(1, 50):
                    try:
                        self.remote.move_file(rf.file_id, parent,
                                              name=None if n == 1 else f"{stem} ({n}){ext}")
                        break
                    except NameConflictError:
                        continue
                else:
                    raise ItemError(f"the invalid-files folder already holds {rf.box_path[-1]!r} "
                                    "and its numbered variants")
                reason += f"; moved into Box folder {self.m.invalid_folder_id}"
                status = "invalid"
            except NotFoundError:
                return  # gone meanwhile
            except (RetryableError, ItemError) as e:
                log.warning("%s: not downloading %s: %s; moving it into the invalid-files folder "
                            "failed (%s), trying again at the next listing", self.name, path, reason,
                            e, extra={"fields": self._fields("invalid", path, rf)})
                return
        state.reject(conn, self.mapping, rf, reason, status)
        log.warning("%s: not downloading %s: %s", self.name, path, reason,
                    extra={"fields": self._fields("invalid", path, rf)})

    def _scan_with_retries(self, conn) -> bool:
        for attempt in range(1, ONCE_ATTEMPTS + 1):
            try:
                self.scan(conn)
                return True
            except RetryableError as e:
                if attempt == ONCE_ATTEMPTS:
                    log.error("%s: listing Box folder %s failed: %s", self.name, self.m.folder_id, e,
                              extra={"fields": {"MAPPING": self.mapping}})
                    self._error = str(e)
                    return False
                time.sleep(min(self.once_retry_cap, backoff_delay(attempt, e.retry_after, base=1.0)))
        return False

    def _poll_loop(self) -> None:
        conn = open_db(self.db_path)
        try:
            failures = 0
            next_full = 0.0
            while not self._stop.is_set():
                now = time.monotonic()
                self._wake_poller.clear()  # before taking the requests: none is lost
                with self._requests_lock:
                    wanted = self._requested
                    self._requested = set()
                try:
                    self._finish_after_actions(conn)
                    if now >= next_full or self.m.folder_id in wanted:
                        self.scan(conn)
                        next_full = time.monotonic() + self.m.poll_interval
                    else:
                        for fid in wanted:
                            self.scan(conn, fid, shallow=True)
                    failures = 0
                    wait = max(0.0, next_full - time.monotonic())
                except RetryableError as e:
                    failures += 1
                    wait = backoff_delay(failures, e.retry_after, base=2.0, cap=self.m.poll_interval)
                    with self._requests_lock:
                        self._requested |= wanted
                    if failures in (1, 5) or failures % 20 == 0:
                        log.warning("%s: listing Box failed: %s; retrying in %.0f s", self.name, e, wait,
                                    extra={"fields": {"MAPPING": self.mapping}})
                except NotFoundError:
                    raise self._root_missing() from None
                except BoxError as e:  # ItemError on the root: wrong id type, odd 4xx
                    failures += 1
                    wait = backoff_delay(failures, base=30.0, cap=max(60.0, self.m.poll_interval))
                    log.warning("%s: listing Box failed: %s; retrying in %.0f s", self.name, e, wait,
                                extra={"fields": {"MAPPING": self.mapping}})
                self._beat(wait + 600)
                self._wake_poller.wait(wait)
        finally:
            conn.close()

    # -- workers ----------------------------------------------------------------------

    def _worker_loop(self) -> None:
        conn = open_db(self.db_path)
        try:
            while not self._stop.is_set():
                self._beat(3600)
                did = False
                for fid in state.due(conn, self.mapping, time.time(), limit=50):
                    if self._stop.is_set():
                        break
                    row = state.claim(conn, self.mapping, fid)
                    if row is None:
                        continue
                    did = True
                    outcome = self._process(conn, row)
                    if outcome == "setup":
                        return
                if did:
                    continue
                nxt = state.next_due_time(conn, self.mapping)
                wait = 30.0 if nxt is None else min(30.0, max(0.05, nxt - time.time()))
                self._beat(wait + 3600)
                if self._wake_workers.wait(wait):
                    self._wake_workers.clear()
                    # Workers share one wake event: one that clears it just as
                    # request_stop sets it would leave the others asleep for `wait`
                    # seconds.  request_stop sets _stop before the event, so pass it on.
                    if self._stop.is_set():
                        self._wake_workers.set()
        finally:
            conn.close()

    def _once_item(self, file_id: str) -> str:
        conn = open_db(self.db_path)
        try:
            outcome = "failed"
            for attempt in range(ONCE_ATTEMPTS):
                row = state.claim(conn, self.mapping, file_id)
                if row is None:
                    return "done"
                outcome = self._process(conn, row)
                if outcome != "retry":
                    return outcome
                r = state.get(conn, self.mapping, file_id)
                if attempt + 1 < ONCE_ATTEMPTS and r is not None:
                    time.sleep(min(self.once_retry_cap, max(0.0, r.next_attempt - time.time())))
            return outcome
        finally:
            conn.close()

    def _fields(self, action: str, path: str, rf: RemoteFile | None = None, *, sha1=None, size=None,
                ms=None) -> dict:
        f = {"MAPPING": self.mapping, "ACTION": action, "PATH": path}
        if rf is not None:
            f["BOX_FILE_ID"] = rf.file_id
            sha1 = sha1 or rf.sha1
            size = size if size is not None else rf.size
        if sha1:
            f["SHA1"] = sha1
        if size is not None:
            f["SIZE"] = size
        if ms is not None:
            f["DURATION_MS"] = ms
        return f

    @staticmethod
    def _dir_entries(dest: Path) -> "_DirView":
        return _DirView(dest)

    @staticmethod
    def _sha1_of(path: Path) -> str | None:
        h = hashlib.sha1()
        try:
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        except OSError:
            return None
        return h.hexdigest()

    def _process(self, conn, row: state.Row) -> str:
        """Fetch one queued Box file, then do the after_download step; returns
        done|skipped|retry|failed|setup."""
        outcome = self._fetch(conn, row)
        if outcome == "done":
            try:
                self._after_action(conn, row.file_id)
            except SetupError as e:
                self._fail(e)
                return "setup"
        return outcome

    def _fetch(self, conn, row: state.Row) -> str:
        self._beat(self.stall_seconds)  # until the first byte arrives
        t0 = time.monotonic()
        rf = row.remote()
        shown = row.box_path
        try:
            parts, problem = local_parts(rf.box_path)
            if problem is not None:
                state.reject(conn, self.mapping, rf, problem)
                log.warning("not downloading %s: %s", show_name(shown, 120), problem,
                            extra={"fields": self._fields("failed", shown, rf)})
                return "failed"
            dest = downloader.ensure_dirs(self.root, parts[:-1], self.m.dir_mode, self._gid)
            rec = row.record()
            for _ in range(REPLAN_LIMIT):
                entries = self._dir_entries(dest)
                entry = entries.get(parts[-1])
                target_sha1 = None
                if entry is not None and entry.is_file and rf.size is not None and entry.size == rf.size:
                    target_sha1 = self._sha1_of(dest / entry.name)
                plan = plan_placement(rf.sha1, parts, rec if rec.relpath else None, entries,
                                      self.m.on_local_change, target_sha1=target_sha1)
                if plan.action == "skip":
                    state.mark_skipped(conn, self.mapping, rf.file_id, sha1=rf.sha1,
                                       version_id=rf.version_id, reason=plan.reason)
                    log.info("skipped %s: %s", plan.relpath, plan.reason,
                             extra={"fields": self._fields("skipped", plan.relpath, rf)})
                    return "skipped"
                if plan.action == "adopt":
                    st = os.stat(self.root / plan.relpath, follow_symlinks=False)
                    state.mark_placed(conn, self.mapping, rf.file_id, relpath=plan.relpath, sha1=rf.sha1,
                                      version_id=rf.version_id, size=st.st_size, local_size=st.st_size,
                                      local_mtime_ns=st.st_mtime_ns,
                                      after_pending=self.m.after_download != "keep")
                    log.info("skipped %s: %s", plan.relpath, plan.reason,
                             extra={"fields": self._fields("skipped", plan.relpath, rf)})
                    return "done"
                final_name = plan.relpath.rsplit("/", 1)[-1]
                try:
                    with self._transfers.begin(plan.relpath, rf.size or 0) as transfer:
                        placed = downloader.download(
                            lambda: self.remote.download(rf.file_id, version_id=rf.version_id),
                            dest, final_name, file_id=rf.file_id, expected_sha1=rf.sha1,
                            expected_size=rf.size, replace=plan.replace, file_mode=self.m.file_mode,
                            gid=self._gid, progress=self._progress_reporter(transfer))
                except downloader.TargetExists:
                    continue  # someone took the name meanwhile: plan again
                state.mark_placed(conn, self.mapping, rf.file_id, relpath=plan.relpath, sha1=placed.sha1,
                                  version_id=rf.version_id, size=placed.size, local_size=placed.size,
                                  local_mtime_ns=placed.mtime_ns,
                                  after_pending=self.m.after_download != "keep")
                ms = int((time.monotonic() - t0) * 1000)
                note = "" if plan.relpath == "/".join(parts) else f" ({plan.reason})"
                log.info("downloaded %s%s", plan.relpath, note,
                         extra={"fields": self._fields("downloaded", plan.relpath, rf, sha1=placed.sha1,
                                                       size=placed.size, ms=ms)})
                return "done"
            raise downloader.LocalWriteError(f"the name {shown} in {dest} keeps being taken; will retry")
        except SetupError as e:
            state.mark_failed(conn, self.mapping, rf.file_id, str(e), time.time() + 300)
            self._fail(e)
            return "setup"
        except NotFoundError:
            return self._vanished(conn, rf)
        except RetryableError as e:
            return self._retry_later(conn, row, rf, str(e), e.retry_after)
        except (downloader.ChecksumMismatch, downloader.LocalWriteError, downloader.TargetExists) as e:
            return self._retry_later(conn, row, rf, str(e), None)
        except ItemError as e:
            return self._retry_later(conn, row, rf, str(e), None, base=12 * self.retry_base)
        except BoxError as e:
            return self._retry_later(conn, row, rf, str(e), None)
        except Exception as e:  # a bug: keep the traceback, keep the item queued
            log.exception("%s: internal error while fetching %s", self.name, shown)
            return self._retry_later(conn, row, rf, f"internal error: {type(e).__name__}: {e}", None,
                                     base=12 * self.retry_base)

    def _progress_reporter(self, transfer):
        """Heartbeat on every chunk; a progress line every few seconds for large files,
        so an admin sees a long transfer is alive (and `status` shows how far it got)."""

        def report(done: int) -> None:
            self._beat(self.stall_seconds)
            if transfer.update(done):
                log.info("downloading %s: %s", transfer.path, transfer.describe(),
                         extra={"fields": {"MAPPING": self.mapping, "ACTION": "progress",
                                           "PATH": transfer.path}})
        return report

    def _retry_later(self, conn, row: state.Row, rf: RemoteFile, error: str, retry_after,
                     base: float | None = None) -> str:
        base = self.retry_base if base is None else max(base, self.retry_base)
        delay = backoff_delay(row.attempts, retry_after, base=base)
        state.mark_failed(conn, self.mapping, rf.file_id, error, time.time() + delay)
        if row.attempts in (1, 3) or row.attempts % 10 == 0:
            log.warning("failed %s (attempt %d, next in %.0f s): %s", row.box_path, row.attempts, delay,
                        error, extra={"fields": self._fields("failed", row.box_path, rf)})
        return "retry"

    def _vanished(self, conn, rf: RemoteFile) -> str:
        try:
            info = self.remote.get_file(rf.file_id)
        except NotFoundError:
            state.mark_gone(conn, self.mapping, rf.file_id)
            log.info("skipped %s: removed from Box before it was fetched", "/".join(rf.box_path),
                     extra={"fields": self._fields("skipped", "/".join(rf.box_path), rf)})
            return "skipped"
        # The version we listed is gone but the file is there: fetch what Box has now.
        state.enqueue(conn, self.mapping, RemoteFile(rf.file_id, rf.box_path, info.sha1,
                                                     info.version_id, info.size, rf.parent_id))
        state.mark_failed(conn, self.mapping, rf.file_id,
                          "the listed version disappeared from Box; fetching the current one",
                          time.time())  # the row is ours (active): hand it back, due now
        return "retry"

    # -- after download ---------------------------------------------------------------

    def _finish_after_actions(self, conn) -> None:
        """Box actions owed for files already placed (e.g. a crash between the two)."""
        for row in state.after_pending(conn, self.mapping):
            if self._stop.is_set():
                return
            self._after_action(conn, row.file_id)

    def _after_action(self, conn, file_id: str) -> None:
        row = state.get(conn, self.mapping, file_id)
        if row is None or row.after_state != "pending":
            return
        how = self.m.after_download
        try:
            if how == "trash":
                self.remote.trash_file(file_id)
            elif how == "move":
                self._move_to_archive(row)
            state.mark_after(conn, self.mapping, file_id, "done")
            log.info("%s %s on Box after download", "trashed" if how == "trash" else "archived",
                     row.box_path, extra={"fields": self._fields(
                         "trashed" if how == "trash" else "moved", row.relpath or row.box_path,
                         sha1=row.sha1, size=row.size) | {"BOX_FILE_ID": file_id}})
        except NotFoundError:
            # Already gone (trashed/moved by us before a crash, or by the vendor).
            state.mark_after(conn, self.mapping, file_id, "done")
        except (RetryableError, ItemError) as e:
            state.mark_after(conn, self.mapping, file_id, "pending", f"after_download {how}: {e}")
            log.warning("%s: after_download %s of %s failed: %s; will retry", self.name, how,
                        row.box_path, e, extra={"fields": {"MAPPING": self.mapping,
                                                           "BOX_FILE_ID": file_id}})

    def _archive_folder(self, dirparts: tuple[str, ...]) -> str:
        parent = self.m.archive_folder_id
        if parent is None:
            raise SetupError(f"{self.m.key_path}.archive_folder_id is required with after_download: move")
        path = ""
        for name in dirparts:
            path = f"{path}/{name}"
            with self._archive_lock:
                cached = self._archive_ids.get(path)
            if cached is None:
                cached = self.remote.create_folder(parent, name).id  # 409 -> the existing folder
                with self._archive_lock:
                    self._archive_ids[path] = cached
            parent = cached
        return parent

    def _move_to_archive(self, row: state.Row) -> None:
        parts = tuple(row.box_path.split("/"))
        parent = self._archive_folder(parts[:-1])
        try:
            self.remote.move_file(row.file_id, parent)
            return
        except NameConflictError:
            pass
        stem, ext = split_ext(parts[-1])
        for n in range(2, 50):
            try:
                self.remote.move_file(row.file_id, parent, name=f"{stem} ({n}){ext}")
                return
            except NameConflictError:
                continue
        raise ItemError(f"archive folder {parent} already holds {parts[-1]!r} and its numbered variants")

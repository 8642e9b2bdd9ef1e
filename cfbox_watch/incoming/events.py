"""Box event stream loop: long-poll, fetch, deduplicate, and ask for a listing.

Events only accelerate: an event whose item lies in the watched tree asks the side
to list that folder (the listing decides what to download), so a lost, repeated or
reordered event costs at most a delay until the next poll_interval listing.

The SDK's EventStream helper is not used: it hides errors and keeps its position
private.  This loop persists the stream position and handled event ids in the state
DB (one transaction per batch), so a restart continues where it stopped.  The
long-poll call may legitimately block for Box's retry_timeout (about 10 minutes);
the Box adapter gives it a long enough read timeout.

One loop runs per Box connection (per shared BoxRemote), whatever the number of
incoming mappings on it: `subscribe` adds a Side's tree and callback to that loop,
`unsubscribe` removes it and the last one out stops the loop.  The stream position
is stored under `<connection>:events`.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Callable, Iterable

from cfbox_watch.errors import BoxError, ItemError, RetryableError, SetupError
from cfbox_watch.incoming import state
from cfbox_watch.incoming.planner import backoff_delay

log = logging.getLogger("cfbox_watch.incoming.events")

# Box's user-event types that can bring a file into (or change a file in) a folder.
INTERESTING = frozenset({
    "ITEM_UPLOAD", "ITEM_CREATE", "ITEM_MOVE", "ITEM_COPY", "ITEM_RENAME",
    "ITEM_UNDELETE_VIA_TRASH", "ITEM_MAKE_CURRENT_VERSION", "ITEM_MODIFY",
})

MAX_CHAIN = 12


class TreeMembership:
    """Answers "is this Box folder inside the watched tree?" for event items.

    Known folders come from the last listing (state DB); an unknown parent is looked up
    upwards with get_folder (a vendor may create a folder and upload into it before our
    listing has seen it).  Negative answers are cached until an event moves that folder.
    """

    def __init__(self, remote, root_id: str, known: Callable[[], dict[str, str]],
                 skip_ids: Iterable[str] = ()):
        self.remote = remote
        self.root_id = root_id
        self.known = known
        self.skip = set(skip_ids)
        self.outside: set[str] = set()
        self.inside: set[str] = set()

    def forget_all(self) -> None:
        self.outside.clear()
        self.inside.clear()

    def contains(self, folder_id: str | None) -> bool:
        if not folder_id:
            return False
        known = self.known()
        chain: list[str] = []
        fid: str | None = folder_id
        for _ in range(MAX_CHAIN):
            if fid is None or fid in self.skip or fid == "0":
                self.outside.update(chain)
                return False
            # The last listing wins over cached answers (a folder moved in since).
            if fid == self.root_id or fid in known or fid in self.inside:
                self.inside.update(chain)
                return True
            if fid in self.outside:
                self.outside.update(chain)
                return False
            chain.append(fid)
            try:
                fid = self.remote.get_folder(fid).parent_id
            except ItemError:  # not found, or not ours to read: not in the tree
                fid = None
        self.outside.update(chain)
        return False


def folders_to_check(events, tree: TreeMembership) -> set[str]:
    """The folder ids whose listing an event batch asks for."""
    out: set[str] = set()
    for ev in events:
        item = ev.item
        if item is None or ev.event_type not in INTERESTING:
            continue
        if item.type == "folder" and ev.event_type in ("ITEM_MOVE", "ITEM_UNDELETE_VIA_TRASH"):
            tree.forget_all()  # a moved folder takes its whole subtree in or out
        if tree.contains(item.parent_id):
            out.add(item.parent_id)
    return out


class EventLoop:
    """The thread body; `on_change(folder_ids)` is called for relevant batches."""

    def __init__(self, remote, db_path, stream_key: str, tree: TreeMembership,
                 on_change: Callable[[set[str]], None], stop: threading.Event,
                 beat: Callable[[float], None] = lambda allowed: None):
        self.remote = remote
        self.db_path = db_path
        self.key = stream_key
        self.tree = tree
        self.on_change = on_change
        self.stop = stop
        self.beat = beat
        self.error: str | None = None
        self.batches = 0

    def run(self) -> None:
        from cfbox_watch.db import open_db

        try:
            conn = open_db(self.db_path)
            try:
                self._loop(conn)
            finally:
                conn.close()
        except Exception:  # a bug: say so; the listing keeps finding files
            log.exception("event loop: internal error (a bug; please report); new files are "
                          "still found by the listing every poll_interval")
            self.error = "internal error in the event loop"

    def _route(self, fresh) -> None:
        folders = folders_to_check(fresh, self.tree) if fresh else set()
        if folders:
            self.on_change(folders)

    def _everything(self) -> None:
        self.on_change({self.tree.root_id})

    def _sleep(self, seconds: float) -> None:
        self.beat(seconds + 30)
        self.stop.wait(seconds)

    def _loop(self, conn) -> None:
        state.ensure(conn)
        pos = state.stream_position(conn, self.key)
        url: str | None = None
        timeout = 600.0
        failures = 0
        while not self.stop.is_set():
            self.beat(120)
            try:
                if pos is None:
                    # First start: changes before now are the start-up listing's job.
                    pos = self.remote.event_stream_now()
                    state.save_stream(conn, self.key, pos)
                events, nxt = self.remote.get_events(pos)
                fresh_ids = state.unseen(conn, self.key, [e.event_id for e in events])
                fresh = [e for e in events if e.event_id in fresh_ids]
                if fresh:
                    self._route(fresh)
                state.save_stream(conn, self.key, nxt, sorted(fresh_ids))
                self.batches += 1
                moved = nxt != pos
                pos = nxt
                failures = 0
                if events and moved:
                    continue  # more may be waiting: drain before long-polling
                if url is None:
                    url, timeout = self.remote.long_poll_info()
                self.beat(timeout + 120)  # blocking in long-poll is idle by choice
                if self.stop.is_set():
                    break
                answer = self.remote.long_poll(url, pos, timeout)
                if answer == "reconnect":
                    url = None
            except RetryableError as e:
                if self.stop.is_set():
                    return
                failures += 1
                url = None
                delay = backoff_delay(failures, e.retry_after, base=2.0, cap=300.0)
                if failures in (1, 5) or failures % 20 == 0:
                    log.warning("event stream: %s; retrying in %.0f s (listing continues meanwhile)",
                                e, delay)
                self._sleep(delay)
            except SetupError as e:
                self.error = str(e)
                log.error("event stream unavailable: %s; new files are still found by the listing "
                          "every poll_interval", e)
                return
            except ItemError as e:
                # Box refused the stored position (e.g. older than Box keeps events):
                # start again from now; a full listing covers the gap.
                failures += 1
                url = None
                log.warning("event stream: %s; continuing from the current position", e)
                pos = None
                self._everything()
                self._sleep(min(60.0, backoff_delay(failures, base=1.0, cap=60.0)))
            except BoxError as e:
                failures += 1
                url = None
                log.warning("event stream: %s; retrying", e)
                self._sleep(backoff_delay(failures, base=5.0, cap=300.0, rng=random))


class ConnectionEvents(EventLoop):
    """The one event loop of a connection, fanning each batch out to its Sides."""

    def __init__(self, remote, db_path, stream_key: str):
        super().__init__(remote, db_path, stream_key, None, None, threading.Event(), self._mark)
        self.lock = threading.Lock()
        self.subs: dict[str, tuple[TreeMembership, Callable[[set[str]], None]]] = {}
        self.thread: threading.Thread | None = None
        self._last = (time.monotonic(), 120.0)

    def _mark(self, allowed: float) -> None:
        self._last = (time.monotonic(), allowed)

    def healthy(self) -> bool:
        """False when the loop is stuck inside one step longer than that step may take."""
        if self.thread is None or not self.thread.is_alive():
            return True  # ended (setup error, logged) or not started: nothing hangs
        t, allowed = self._last
        return time.monotonic() - t <= allowed

    def _subscribers(self):
        with self.lock:
            return list(self.subs.values())

    def _route(self, fresh) -> None:
        for tree, on_change in self._subscribers():
            folders = folders_to_check(fresh, tree)
            if folders:
                on_change(folders)

    def _everything(self) -> None:
        for tree, on_change in self._subscribers():
            on_change({tree.root_id})


_HUBS: dict[tuple[int, str], ConnectionEvents] = {}
_HUBS_LOCK = threading.Lock()


def subscribe(remote, db_path, connection: str, name: str, tree: TreeMembership,
              on_change: Callable[[set[str]], None]) -> ConnectionEvents:
    """Join (starting it when needed) the event loop of `remote`'s connection."""
    key = (id(remote), str(db_path))
    with _HUBS_LOCK:
        hub = _HUBS.get(key)
        ended = hub is not None and hub.thread is not None and not hub.thread.is_alive()
        if hub is None or hub.stop.is_set() or ended:  # an ended loop (setup error) starts anew
            hub = ConnectionEvents(remote, db_path, f"{connection}:events")
            _HUBS[key] = hub
        with hub.lock:
            hub.subs[name] = (tree, on_change)
        if hub.thread is None:
            hub.thread = threading.Thread(target=hub.run, name=f"{connection}:events", daemon=True)
            hub.thread.start()
    return hub


def unsubscribe(hub: ConnectionEvents, name: str) -> None:
    """Leave; the last Side out stops the loop (it ends after its current long-poll)."""
    with _HUBS_LOCK:
        with hub.lock:
            hub.subs.pop(name, None)
            empty = not hub.subs
        if empty:
            hub.stop.set()
            for k, v in list(_HUBS.items()):
                if v is hub:
                    del _HUBS[k]

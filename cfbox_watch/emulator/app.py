"""The emulator's in-process state beyond SQLite: settings, faults, rate limits,
counters, name reservations for uploads in flight, short-lived download links."""

from __future__ import annotations

import threading
import time
from collections import Counter
from contextlib import contextmanager

from cfbox_watch.emulator.faults import Faults, RateLimits
from cfbox_watch.emulator.http import ApiError
from cfbox_watch.emulator.names import name_key
from cfbox_watch.emulator.store import Store, iso

DEFAULT_SETTINGS = {
    "token_ttl": 3600.0,
    "part_size": 8 * 1024 * 1024,
    "chunk_min": 20_000_000,
    "file_size_limit": 5 * 10 ** 9,       # Business plan
    "direct_upload_max": 50 * 1024 * 1024,  # Box: "direct uploads are limited to 50MB"
    "commit_202": 0,                      # first N commits of each session answer 202
    "download_202": 0,                    # first N downloads of each new version answer 202
    "conflicts_shape": "list",            # "list" (OpenAPI) or "object" (Box's own clients)
    "strict_parts": False,                # True: re-sending even identical part bytes is a 409
    "session_ttl": 7 * 24 * 3600.0,
    "longpoll_hold": 30.0,
    "app_authorized": True,
}


class Emulator:
    def __init__(self, store: Store, **settings):
        self.store = store
        self.settings = dict(DEFAULT_SETTINGS)
        self.settings.update({k: v for k, v in settings.items() if v is not None})
        self.faults = Faults()
        self.rate_limits = RateLimits()
        self.counters: Counter = Counter()
        self.counter_lock = threading.Lock()
        self.reserved: set[tuple[str, str]] = set()
        self.reserve_lock = threading.Lock()
        self.download_links: dict[str, tuple[str, float]] = {}
        self.download_202_left: dict[str, int] = {}
        self.channels: dict[str, str] = {}
        self.stopping = False

    def now_iso(self) -> str:
        return iso()

    def count(self, key: str) -> None:
        with self.counter_lock:
            self.counters[key] += 1
            self.counters["total"] += 1

    def update_settings(self, **kw) -> dict:
        unknown = set(kw) - set(DEFAULT_SETTINGS)
        if unknown:
            raise ApiError(400, "bad_request", f"Unknown settings: {sorted(unknown)}")
        if "conflicts_shape" in kw and kw["conflicts_shape"] not in ("list", "object"):
            raise ApiError(400, "bad_request", "conflicts_shape must be 'list' or 'object'")
        self.settings.update(kw)
        return dict(self.settings)

    def check_size(self, size: int) -> None:
        if size > self.settings["file_size_limit"]:
            raise ApiError(403, "file_size_limit_exceeded",
                           "File exceeds the folder owner's file size limit",
                           {"size_limit": self.settings["file_size_limit"]})

    def check_direct_size(self, size: int) -> None:
        limit = int(self.settings["direct_upload_max"])
        if size > limit:
            raise ApiError(413, "request_entity_too_large",
                           f"Direct uploads are limited to {limit} bytes; use a chunked upload session",
                           {"size_limit": limit})

    @contextmanager
    def reserve(self, parent_id: str, name: str):
        """Hold a name while its upload body streams in; a concurrent duplicate gets
        409 name_temporarily_reserved, as on Box."""
        key = (parent_id, name_key(name))
        with self.reserve_lock:
            if key in self.reserved:
                raise ApiError(409, "name_temporarily_reserved",
                               "An item with the same name is being uploaded right now; retry shortly")
            self.reserved.add(key)
        try:
            yield
        finally:
            with self.reserve_lock:
                self.reserved.discard(key)

    def create_item(self, type: str, name: str, parent_id: str, actor: str, **kw) -> dict:
        """Check for a name conflict and insert, atomically."""
        from cfbox_watch.emulator.items import conflict_error

        with self.store.lock:
            clash = self.store.conflict(parent_id, name, actor)
            if clash:
                raise conflict_error(self, clash)
            return self.store.insert_item(type=type, name=name, parent_id=parent_id, actor=actor, **kw)

    def fresh_version(self, version_id: str) -> None:
        n = int(self.settings["download_202"])
        if n > 0:
            self.download_202_left[version_id] = n

    def take_download_202(self, version_id: str) -> bool:
        left = self.download_202_left.get(version_id, 0)
        if left > 0:
            self.download_202_left[version_id] = left - 1
            return True
        return False

    def download_target(self, token: str) -> str | None:
        vid, exp = self.download_links.get(token, (None, 0.0))
        if vid is None or exp < time.time():
            return None
        return vid

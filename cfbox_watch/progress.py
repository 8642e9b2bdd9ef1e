"""In-flight transfers of one Side, shared by both directions.

`status` shows large transfers with their progress (read from each Side's summary(),
which the daemon records in the state DB), and the journal gets a progress line every
few seconds for them, so an admin can tell a 2 GB upload that is moving from one that
hangs.  Small files finish faster than anyone could look, so they are left out.
"""

from __future__ import annotations

import threading
import time

PROGRESS_MIN_SIZE = 64 * 1024 * 1024   # smaller transfers are neither listed nor logged
PROGRESS_EVERY = 5.0                   # seconds between two progress lines of one transfer


class Transfer:
    def __init__(self, registry: "Transfers", path: str, size: int):
        self._registry = registry
        self._min_size, self._every = registry.min_size, registry.every
        self.path = path
        self.size = size
        self.done = 0
        self.started = self._last = time.monotonic()

    @property
    def tracked(self) -> bool:
        return self.size >= self._min_size

    def update(self, done: int) -> bool:
        """Record `done` bytes; True when a progress line is due for this transfer."""
        self.done = done
        now = time.monotonic()
        if self.tracked and now - self._last >= self._every:
            self._last = now
            return True
        return False

    def describe(self) -> str:
        """`45% of 200 MB, 31.2 MB/s` for the progress line."""
        rate = self.done / max(time.monotonic() - self.started, 1e-6) / 1e6
        pct = self.done * 100 // self.size if self.size else 100
        return f"{pct}% of {self.size / 1e6:.0f} MB, {rate:.1f} MB/s"

    def end(self) -> None:
        self._registry._end(self)

    def __enter__(self) -> "Transfer":
        return self

    def __exit__(self, *exc) -> None:
        self.end()


class Transfers:
    def __init__(self, min_size: int = PROGRESS_MIN_SIZE, every: float = PROGRESS_EVERY) -> None:
        self.min_size, self.every = min_size, every
        self._lock = threading.Lock()
        self._items: dict[int, Transfer] = {}

    def begin(self, path: str, size: int) -> Transfer:
        t = Transfer(self, path, size)
        if t.tracked:
            with self._lock:
                self._items[id(t)] = t
        return t

    def _end(self, t: Transfer) -> None:
        with self._lock:
            self._items.pop(id(t), None)

    def snapshot(self) -> list[dict]:
        """[{"path", "done", "size"}] of the large transfers in flight, for summary()."""
        with self._lock:
            items = list(self._items.values())
        return [{"path": t.path, "done": t.done, "size": t.size}
                for t in sorted(items, key=lambda t: t.started)]

"""Pure decisions of the outgoing side: what to do with a file, and when.

Everything here works on plain values (no disk, no Box, no clock) so that the
exactly-once rules can be tested exhaustively with hypothesis.  The rules:

* A file enters the queue as `settling`; it becomes `pending` only after its size,
  mtime and inode stayed the same for `settle_time`.  Any change sends it back to
  `settling` with a new clock, so a file that keeps changing is never sent.
* A file that was uploaded (`done`) and has not changed needs nothing: no hashing and
  no Box call after a restart.
* A changed file keeps its Box file id, so it becomes a new version, not a duplicate.
* A row being uploaded is never touched by a scan; the worker re-checks the file
  after the transfer and discards the result if it changed underneath.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Literal

from cfbox_watch.outgoing.scanner import FileStat

Status = Literal["pending", "settling", "uploading", "done", "failed", "skipped", "held"]

# Statuses whose row must not be re-planned while the stat stays the same: the file
# waits for a change (held/failed/skipped/done) or for its settle clock (settling) or
# for a worker (pending/uploading).
STATUSES = ("pending", "settling", "uploading", "done", "failed", "skipped", "held")


@dataclass(frozen=True)
class Row:
    """The part of a state row the planner needs."""

    relpath: str
    status: str
    size: int
    mtime_ns: int
    inode: int
    stable_since: float = 0.0
    sha1: str | None = None          # SHA-1 of the content last confirmed on Box
    box_file_id: str | None = None


@dataclass(frozen=True)
class Observe:
    """What to do after looking at a file on disk."""

    action: Literal["nothing", "track"]   # track: (re)write stat, status settling
    stable_since: float = 0.0


def observe(row: Row | None, st: FileStat, now: float) -> Observe:
    """A scan or a watch hint saw `st`; decide whether the row's settle clock restarts."""
    if row is None:
        return Observe("track", now)
    if row.status == "uploading":
        return Observe("nothing")
    if (row.size, row.mtime_ns, row.inode) == (st.size, st.mtime_ns, st.inode):
        return Observe("nothing")
    return Observe("track", now)


@dataclass(frozen=True)
class Promote:
    action: Literal["wait", "ready", "restart", "gone"]
    wake_at: float = 0.0


def promote(row: Row, st: FileStat | None, now: float, settle_time: float) -> Promote:
    """Re-check a `settling` row against the disk: ready, keep waiting, or restart."""
    if st is None:
        return Promote("gone")
    if (row.size, row.mtime_ns, row.inode) != (st.size, st.mtime_ns, st.inode):
        return Promote("restart", now + settle_time)
    ready_at = row.stable_since + settle_time
    if now >= ready_at:
        return Promote("ready")
    return Promote("wait", ready_at)


def on_vanished(row: Row) -> Literal["delete", "keep"]:
    """The file is no longer on disk (deleted, moved away, or after_upload moved it).

    Done rows are kept so that a re-export under the same name becomes a new version
    of the same Box file; rows still waiting are dropped (temp files that were renamed).
    """
    if row.status in ("done", "uploading"):
        return "keep"
    return "delete"


UploadKind = Literal["already", "new", "version", "rename", "skip"]


def plan_upload(row: Row, local_sha1: str, on_conflict: str) -> UploadKind:
    """Decide how to send a settled file whose SHA-1 is now known."""
    if row.box_file_id is None:
        return "new"
    if row.sha1 == local_sha1:
        return "already"            # touched, not changed: Box already has these bytes
    return conflict_action(on_conflict)


def conflict_action(on_conflict: str) -> UploadKind:
    return {"version": "version", "rename": "rename", "skip": "skip"}[on_conflict]


def on_name_conflict(local_sha1: str, remote_sha1: str | None, on_conflict: str) -> UploadKind:
    """Box already holds a file of that name (409 or preflight).

    Same bytes -> nothing to send (another daemon, or an earlier run whose state was
    lost, already did it).  Other bytes -> the mapping's `on_conflict` policy.
    """
    if remote_sha1 is not None and remote_sha1.lower() == local_sha1.lower():
        return "already"
    return conflict_action(on_conflict)


def renamed(name: str, n: int) -> str:
    """`on_conflict: rename` names: 'look.jpg' -> 'look (1).jpg'; '.hidden' keeps its dot."""
    stem, ext = os.path.splitext(name)
    if not stem:
        stem, ext = ext, ""
    return f"{stem} ({n}){ext}"


def backoff(attempts: int, retry_after: float | None, rand: float,
            cap: float = 300.0, base: float = 1.0) -> float:
    """Seconds before a failed job is tried again.

    `retry_after` (Box's Retry-After) is a floor, not a suggestion; otherwise
    exponential from `base` seconds, capped, with jitter in [50 %, 100 %] so that many workers
    that failed together do not return together.  `rand` is in [0, 1).
    """
    delay = min(cap, base * float(2 ** min(attempts - 1 if attempts > 0 else 0, 20)))
    delay *= 0.5 + rand / 2
    if retry_after is not None and retry_after > 0:
        delay = max(retry_after * (1 + rand / 10), min(delay, retry_after * 2))
    return delay


def part_ranges(size: int, part_size: int) -> list[tuple[int, int]]:
    """(offset, length) of every part Box expects: all `part_size`, the last shorter."""
    if part_size <= 0:
        raise ValueError("part_size must be positive")
    return [(off, min(part_size, size - off)) for off in range(0, size, part_size)]


def missing_parts(size: int, part_size: int,
                  uploaded: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Parts still to send when resuming: those whose exact (offset, length) Box lacks."""
    have = set(uploaded)
    return [p for p in part_ranges(size, part_size) if p not in have]


def summarize_counts(counts: dict[str, int]) -> dict[str, int]:
    """Map status counts to the Side summary's queue figures."""
    return {
        "queued": counts.get("pending", 0) + counts.get("settling", 0),
        "active": counts.get("uploading", 0),
        "failed": counts.get("failed", 0) + counts.get("held", 0),
        "skipped": counts.get("skipped", 0),
    }

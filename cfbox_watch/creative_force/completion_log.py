"""Which batches are finished, and the completion log's name and content.

Pure: the engine hands in plain rows (the outgoing queue, what was confirmed on Box,
what the Box listing shows) and gets back decisions, so the rules (never list a file
that is not on Box; wait for quiet; a grown batch gets a new version) are tested
without Box or disk.

A batch is a top-level subfolder of the outgoing folder.  Loose files at the top
level belong to no batch and never get a log: Creative Force logs describe a
production, and a loose file cannot say which one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable, Mapping

from cfbox_watch.creative_force.roundtrip import batch_of
from cfbox_watch.names import casefold_key

HEADER = "# cfbox-watch transfer completed"


@dataclass(frozen=True)
class QueueRow:
    """One outgoing queue row (out_files) as far as completion cares."""

    relpath: str
    status: str            # settling | pending | uploading | done | failed | skipped | held ...
    changed_at: float      # the latest of updated_at / done_at


@dataclass(frozen=True)
class SentFile:
    """A file Box confirmed (size and SHA-1 as Box reported them)."""

    relpath: str
    size: int
    sha1: str
    at: float
    box_name: str | None = None   # the name on Box when it differs (on_conflict: rename)

    @property
    def box_path(self) -> str:
        """Where the vendor sees it: the local folders, the name Box holds."""
        if not self.box_name:
            return self.relpath
        head, _, _ = self.relpath.rpartition("/")
        return f"{head}/{self.box_name}" if head else self.box_name


def path_key(path: str) -> str:
    """Box compares names after NFC and ignoring case; so do we, per component."""
    return "/".join(casefold_key(p) for p in path.split("/"))


@dataclass(frozen=True)
class BatchState:
    batch: str
    complete: bool         # every queued file of the batch is done
    quiet_since: float     # the last change in the batch
    waiting: int           # files not done yet

    def due(self, now: float, quiet: float) -> bool:
        return self.complete and now - self.quiet_since >= quiet


def batches(queue: Iterable[QueueRow], sent: Iterable[SentFile]) -> dict[str, BatchState]:
    """Per batch: complete (nothing but `done` rows) and when it last changed.

    Any row not `done` (still settling, uploading, failed, skipped for a bad name,
    held as a truncated image) keeps the batch open: the vendor must not start on a
    production that is missing a file."""
    acc: dict[str, list] = {}
    for r in queue:
        b = batch_of(r.relpath)
        if not b:
            continue
        a = acc.setdefault(b, [0.0, 0, False])
        a[0] = max(a[0], r.changed_at)
        if r.status != "done":
            a[1] += 1
    for s in sent:
        b = batch_of(s.relpath)
        if not b:
            continue
        a = acc.setdefault(b, [0.0, 0, False])
        a[0] = max(a[0], s.at)
        a[2] = True
    return {b: BatchState(b, complete=(a[1] == 0 and a[2]), quiet_since=a[0], waiting=a[1])
            for b, a in acc.items()}


def log_name(pattern: str, batch: str, mapping: str) -> str:
    return pattern.format(batch=batch, mapping=mapping)


def entries(batch: str, sent: Iterable[SentFile], on_box: Mapping[str, str],
            log_file_name: str) -> list[SentFile]:
    """The files the log lists: sent by us into this batch AND on Box right now with
    the same SHA-1 (`on_box`: path below the batch folder, as Box names it -> Box
    sha1; compared like Box compares names).  A file the vendor already moved away, or
    that changed on Box since, is left out; the log never lists itself."""
    box = {path_key(k): v for k, v in on_box.items()}
    out = []
    prefix = batch + "/"
    for s in sent:
        if batch_of(s.relpath) != batch:
            continue
        inner = s.box_path[len(prefix):]
        if path_key(inner) == path_key(log_file_name):
            continue
        if box.get(path_key(inner)) == s.sha1:
            out.append(s)
    return sorted(out, key=lambda s: s.box_path)


def content(batch: str, listed: list[SentFile]) -> bytes:
    """The log: a short header, then `path<TAB>size<TAB>sha1` per file, paths relative
    to the batch folder.  No timestamps, so an unchanged batch gives identical bytes and
    is never re-uploaded."""
    prefix = batch + "/"
    lines = [HEADER, f"# batch: {batch}", f"# files: {len(listed)}",
             f"# bytes: {sum(s.size for s in listed)}", "# path\tsize\tsha1"]
    for s in listed:
        lines.append(f"{s.box_path[len(prefix):]}\t{s.size}\t{s.sha1}")
    return ("\n".join(lines) + "\n").encode("utf-8")


def parse(data: bytes) -> list[tuple[str, int, str]]:
    """(path, size, sha1) rows of a log (tests, and anyone checking a vendor's copy)."""
    rows = []
    for line in data.decode("utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        path, size, sha1 = line.rsplit("\t", 2)
        rows.append((path, int(size), sha1))
    return rows


def fingerprint(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


@dataclass(frozen=True)
class Decision:
    action: str            # "wait" | "write" | "same"
    reason: str = ""


def decide(state: BatchState | None, listed: list[SentFile] | None, last_fingerprint: str | None,
           data: bytes | None, now: float, quiet: float) -> Decision:
    """Write when the batch is complete, quiet, has something to list, and the log
    differs from the one last written (a grown batch -> a new version)."""
    if state is None or not state.complete:
        return Decision("wait", f"{state.waiting if state else 0} file(s) not on Box yet")
    if not state.due(now, quiet):
        return Decision("wait", "not quiet yet")
    if listed is not None and not listed:
        return Decision("wait", "nothing of this batch is on Box")
    if data is not None and last_fingerprint == fingerprint(data):
        return Decision("same")
    return Decision("write")

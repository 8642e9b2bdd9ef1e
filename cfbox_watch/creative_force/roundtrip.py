"""Matching what came back against what was sent, and the round-trip figures.

Pure functions over plain values, so the matching rules (the part a studio argues
about) are tested without Box or disk.

Rules (docs/creative-force.md):
- **Key.** A file is matched by its name stem: the name without its last extension
  (`a.jpg` out and `a.tif` back are the same item, the way Creative Force's "Filename
  Only" mode works), compared after NFC + casefold (Box names are case-insensitive).
  `.hidden` has no extension.  In `filename+folder` mode the folder path below the
  batch root (also NFC + casefold) is part of the key, and the batch too.
- **Duplicates.** A vendor returning the same name twice gets `stem (2).ext` locally
  (the incoming side never overwrites).  For matching, a return whose stem ends in
  ` (n)` with n >= 2 counts for the item without the suffix, unless an item sent under
  the suffixed stem exists.
- **Batch.** The first path component of a sent file (its top-level subfolder of
  `outgoing`), "" for loose files.
- **Outstanding.** An item is outstanding when no return arrived after its last send
  (the main send, or a later rejection send for rework).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Iterable, Literal, Sequence

from cfbox_watch.names import casefold_key

MatchMode = Literal["filename", "filename+folder"]

_DUP = re.compile(r"^(?P<stem>.*) \((?P<n>[0-9]+)\)$")


def split_stem(name: str) -> tuple[str, str]:
    """("a", ".jpg") for "a.jpg"; a leading dot alone is not an extension."""
    dot = name.rfind(".")
    if dot <= 0:
        return name, ""
    return name[:dot], name[dot:]


def batch_of(relpath: str) -> str:
    parts = relpath.split("/")
    return parts[0] if len(parts) > 1 else ""


def item_key(relpath: str, mode: MatchMode) -> tuple[str, ...]:
    """The matching key of a file at `relpath` (relative to its mapping root).  Returns
    keep the vendor's folder structure, which starts at the batch folder just like the
    sent file's, so in `filename+folder` mode the whole folder path must agree."""
    parts = relpath.split("/")
    stem = casefold_key(split_stem(parts[-1])[0])
    if mode == "filename":
        return (stem,)
    return (*(casefold_key(p) for p in parts[:-1]), stem)


def duplicate_base(key: tuple[str, ...]) -> tuple[str, ...] | None:
    """The key without a keep-both ` (n)` suffix (n >= 2), or None."""
    m = _DUP.match(key[-1])
    if not m or int(m.group("n")) < 2:
        return None
    return (*key[:-1], m.group("stem"))


def accepted(name: str, patterns: Sequence[str]) -> bool:
    """Whether a returned file's name matches one of the mapping's `accept` patterns
    (case-insensitive: vendors write .TIF as often as .tif)."""
    low = casefold_key(name)
    return any(fnmatch.fnmatchcase(low, casefold_key(p)) for p in patterns)


@dataclass(frozen=True)
class Sent:
    relpath: str                 # relative to the outgoing (or rejected) folder
    at: float                    # when Box confirmed it
    rejection: bool = False      # sent through the rejection half


@dataclass(frozen=True)
class Returned:
    relpath: str                 # the Box path below the Download folder
    at: float


@dataclass(frozen=True)
class Item:
    batch: str
    key: tuple[str, ...]
    relpath: str                 # of the main send (or the rejection send without one)
    sent_at: float | None        # the main send
    rejected_at: float | None    # the latest rejection send
    returned_at: float | None    # the latest matching return

    @property
    def last_send(self) -> float:
        return max(t for t in (self.sent_at, self.rejected_at) if t is not None)

    @property
    def outstanding(self) -> bool:
        return self.returned_at is None or self.returned_at < self.last_send


@dataclass(frozen=True)
class Tally:
    items: tuple[Item, ...]
    unmatched: tuple[str, ...]   # returns that match nothing sent


def match(sent: Iterable[Sent], returned: Iterable[Returned], mode: MatchMode) -> Tally:
    """Pair returns with sent items.  A return key shared by items in several batches
    (possible in `filename` mode) counts for each of them: filename matching assumes
    names are unique across the vendor's work, as Creative Force's mode does."""
    items: dict[tuple[str, tuple[str, ...]], dict] = {}
    by_key: dict[tuple[str, ...], list[tuple[str, tuple[str, ...]]]] = {}
    for s in sorted(sent, key=lambda s: (s.rejection, s.at, s.relpath)):
        key = item_key(s.relpath, mode)
        ident = (batch_of(s.relpath), key)
        it = items.get(ident)
        if it is None:
            it = items[ident] = {"relpath": s.relpath, "sent_at": None, "rejected_at": None,
                                 "returned_at": None}
            by_key.setdefault(key, []).append(ident)
        if s.rejection:
            it["rejected_at"] = max(s.at, it["rejected_at"] or s.at)
        else:
            if it["sent_at"] is None or (it["rejected_at"] is None and it["relpath"] != s.relpath):
                it["relpath"] = s.relpath
            it["sent_at"] = max(s.at, it["sent_at"] or s.at)
    unmatched: list[str] = []
    for r in returned:
        key = item_key(r.relpath, mode)
        idents = by_key.get(key)
        if not idents:
            base = duplicate_base(key)
            idents = by_key.get(base) if base is not None else None
        if not idents:
            unmatched.append(r.relpath)
            continue
        for ident in idents:
            it = items[ident]
            it["returned_at"] = max(r.at, it["returned_at"] or r.at)
    out = tuple(Item(batch=b, key=k, **v) for (b, k), v in sorted(items.items()))
    return Tally(out, tuple(sorted(unmatched)))


def figures(items: Sequence[Item], now: float) -> dict:
    """sent / returned / outstanding / rejected / oldest outstanding age (seconds)."""
    outstanding = [i for i in items if i.outstanding]
    return {
        "sent": sum(1 for i in items if i.sent_at is not None),
        "returned": sum(1 for i in items if not i.outstanding),
        "outstanding": len(outstanding),
        "rejected": sum(1 for i in items if i.rejected_at is not None),
        "oldest_outstanding_age": (round(now - min(i.last_send for i in outstanding), 1)
                                   if outstanding else None),
    }


def report(tally: Tally, now: float) -> dict:
    """Per vendor totals and per batch figures, the shape `status --json` shows."""
    batches: dict[str, list[Item]] = {}
    for i in tally.items:
        batches.setdefault(i.batch, []).append(i)
    out = figures(tally.items, now)
    out["unmatched_returns"] = len(tally.unmatched)
    out["batches"] = [{"batch": b, **figures(v, now)} for b, v in sorted(batches.items())]
    return out


def overdue(items: Sequence[Item], now: float, due: float | None) -> list[Item]:
    """Outstanding items whose last send is older than `due` seconds, oldest first."""
    if due is None:
        return []
    late = [i for i in items if i.outstanding and now - i.last_send > due]
    return sorted(late, key=lambda i: (i.last_send, i.relpath))

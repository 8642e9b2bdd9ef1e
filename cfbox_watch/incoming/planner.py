"""Pure decisions of the incoming side: what to fetch, where it lands, what it is named.

Everything here works on plain values (no Box, no disk) so that the exactly-once and
never-overwrite rules can be tested exhaustively, including with hypothesis.

Naming rules (documented for the studio):
- Every name from Box is NFC-normalised before it becomes a local name, so a macOS
  vendor's NFD "Café.jpg" and an NFC "Café.jpg" are the same local file and a local
  file is compared with Box by its NFC form (no second copy, no re-download loop).
- A name that cannot safely be a local name (`..`, `/`, control characters, over 255
  bytes, ...) is rejected and reported; nothing is written for that item.
- "Keep both" names: `stem (2).ext`, `stem (3).ext`, ... (the first free one; the stem
  is shortened when the name would exceed 255 bytes).  Used when the target name is
  taken by a local file that did not come from this Box file, or (on_local_change:
  keep_both) when the studio changed our earlier copy.
"""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass
from typing import Literal, Mapping, Sequence

from cfbox_watch.names import local_name_problem, nfc

MAX_NAME_BYTES = 255
TMP_SUFFIX = ".cfbox-tmp"


@dataclass(frozen=True)
class RemoteFile:
    """A file seen in a Download folder's tree; `box_path` holds the Box names from below
    the Download folder down to the file (the file's own name last)."""

    file_id: str
    box_path: tuple[str, ...]
    sha1: str | None = None
    version_id: str | None = None
    size: int | None = None
    parent_id: str | None = None


@dataclass(frozen=True)
class Record:
    """What the state DB remembers of one Box file (see incoming.state)."""

    file_id: str
    status: str                        # pending|active|done|failed|skipped|rejected
    box_path: str = ""
    relpath: str | None = None         # local relpath of the copy we placed
    sha1: str | None = None            # sha1 of the copy we placed
    local_size: int | None = None      # stat of our copy right after placing it
    local_mtime_ns: int | None = None
    seen_sha1: str | None = None       # Box content last decided on (done/skipped/rejected)
    seen_version: str | None = None


@dataclass(frozen=True)
class LocalEntry:
    """One existing directory entry, keyed elsewhere by its NFC name."""

    name: str                          # the actual on-disk name (may be NFD)
    is_file: bool
    size: int = 0
    mtime_ns: int = 0


@dataclass(frozen=True)
class Placement:
    action: Literal["download", "adopt", "skip"]
    relpath: str | None = None         # local relpath (posix) to write or adopt
    replace: bool = False              # True: os.replace allowed; False: never clobber
    reason: str = ""


def content_key(sha1: str | None, version_id: str | None) -> str | None:
    """What identifies one Box version for the once-per-version rule: the SHA-1 (a
    re-upload of identical bytes is not new), the version id only when Box gave no sha1."""
    if sha1:
        return sha1.lower()
    return f"v:{version_id}" if version_id else None


def show_name(name: str, limit: int = 60) -> str:
    """A name fit for a log line: repr (control characters visible), long ones cut."""
    if len(name) > limit:
        return repr(name[: limit - 20] + "…" + name[-12:])
    return repr(name)


def local_parts(box_path: Sequence[str]) -> tuple[tuple[str, ...] | None, str | None]:
    """Map Box names to local names (NFC), or say why the path cannot be stored.

    Returns (parts, None) or (None, problem).  Checking happens per component, so a
    name can never contribute a separator or a parent reference.
    """
    if not box_path:
        return None, "the item has no name"
    out = []
    for name in box_path:
        problem = local_name_problem(name)
        if problem is not None:
            return None, f"unsafe name {show_name(name)}: {problem}"
        local = nfc(name)
        problem = local_name_problem(local)
        if problem is not None:  # NFC can lengthen a name past 255 bytes
            return None, f"unsafe name {show_name(name)}: {problem}"
        if local.endswith(TMP_SUFFIX):
            return None, f"the name {show_name(name)} ends in {TMP_SUFFIX}, reserved for download temporaries"
        out.append(local)
    return tuple(out), None


def needs_work(remote: RemoteFile, rec: Record | None) -> bool:
    """Whether a listing that saw `remote` must queue it (no disk, no Box call)."""
    if rec is None:
        return True
    if rec.status in ("pending", "active", "failed"):
        return True
    if rec.status == "rejected":
        return "/".join(remote.box_path) != rec.box_path  # renamed on Box: look again
    # done / skipped: only a different Box content counts, never a rename or a move
    return content_key(remote.sha1, remote.version_id) != content_key(rec.seen_sha1, rec.seen_version)


def _fit(stem: str, tail: str) -> str:
    """Shorten `stem` (never cutting inside a character) so that stem+tail fits."""
    budget = MAX_NAME_BYTES - len(tail.encode("utf-8"))
    raw = stem.encode("utf-8")
    if len(raw) <= budget:
        return stem + tail
    return raw[: max(budget, 1)].decode("utf-8", errors="ignore") + tail


def split_ext(name: str) -> tuple[str, str]:
    stem, ext = os.path.splitext(name)
    if not stem:  # ".hidden" has no extension
        return name, ""
    return stem, ext


def variant_name(name: str, n: int) -> str:
    stem, ext = split_ext(name)
    return _fit(stem, f" ({n}){ext}")


_VARIANT = re.compile(r"^(?P<stem>.*) \((?P<n>[0-9]+)\)$")


def is_variant_of(candidate: str, name: str) -> bool:
    """True when `candidate` is a keep-both name made from `name` (`stem (n).ext`)."""
    cstem, cext = split_ext(nfc(candidate))
    stem, ext = split_ext(nfc(name))
    if cext != ext:
        return False
    m = _VARIANT.match(cstem)
    if not m or int(m.group("n")) < 2:
        return False
    if m.group("stem") == stem:
        return True
    # a stem shortened to fit 255 bytes
    return len(nfc(candidate).encode("utf-8")) >= MAX_NAME_BYTES - 4 and stem.startswith(m.group("stem"))


def free_name(name: str, taken: Mapping[str, object] | set[str]) -> str:
    """The first `stem (n).ext`, n >= 2, whose NFC form is not in `taken` (NFC keys)."""
    n = 2
    while True:
        cand = variant_name(name, n)
        if nfc(cand) not in taken:
            return cand
        n += 1


def _join(dirparts: Sequence[str], name: str) -> str:
    return "/".join((*dirparts, name))


def unchanged(rec: Record, entry: LocalEntry) -> bool:
    """Our earlier copy is untouched when size and mtime are as we left them."""
    return entry.is_file and entry.size == rec.local_size and entry.mtime_ns == rec.local_mtime_ns


def plan_placement(
    remote_sha1: str | None,
    parts: tuple[str, ...],
    rec: Record | None,
    dir_entries: Mapping[str, LocalEntry],
    on_local_change: str,
    *,
    target_sha1: str | None = None,
) -> Placement:
    """Decide where a Box file's content goes in its (NFC) destination folder.

    `dir_entries` answers, for the NFC form of a name, the existing entry of the
    destination folder spelled that way in any normalisation (a dict in tests, a
    lazy lookup in the engine); `target_sha1` is the SHA-1 of the existing same-named file when the
    caller hashed it (same size as on Box), which lets an identical file be adopted
    without a download.  Invariants: a file that did not come from this Box file is
    never replaced; our own copy is replaced only when unchanged or when the policy
    says overwrite.
    """
    dirparts, name = parts[:-1], parts[-1]
    want = _join(dirparts, name)
    entry = dir_entries.get(name)
    if entry is None:
        return Placement("download", want, False, "new local file")
    if not entry.is_file:
        return Placement("download", _join(dirparts, free_name(name, dir_entries)), False,
                         f"{entry.name!r} exists and is not a regular file; keeping both")
    actual = _join(dirparts, entry.name)
    if remote_sha1 and target_sha1 and target_sha1.lower() == remote_sha1.lower():
        return Placement("adopt", actual, False, "identical local file already in place")
    if rec is not None and rec.relpath == actual:
        if unchanged(rec, entry) or on_local_change == "overwrite":
            return Placement("download", actual, True,
                             "new version replaces our earlier copy" if unchanged(rec, entry)
                             else "local copy changed; on_local_change: overwrite")
        if on_local_change == "skip":
            return Placement("skip", actual, False,
                             "local copy changed since download; on_local_change: skip")
        return Placement("download", _join(dirparts, free_name(name, dir_entries)), False,
                         "local copy changed since download; keeping both")
    # The name is taken by a file that did not come from this Box file.  If our own
    # earlier keep-both copy sits next to it untouched, the new version replaces that.
    if rec is not None and rec.relpath:
        rdir, _, rname = rec.relpath.rpartition("/")
        if tuple(rdir.split("/") if rdir else ()) == tuple(dirparts) and is_variant_of(rname, name):
            own = dir_entries.get(nfc(rname))
            if own is not None and own.name == rname and unchanged(rec, own):
                return Placement("download", rec.relpath, True,
                                 "new version replaces our earlier kept-both copy")
    return Placement("download", _join(dirparts, free_name(name, dir_entries)), False,
                     f"a local file named {entry.name!r} did not come from this Box file; keeping both")


def temp_name(final_name: str, file_id: str) -> str:
    """Hidden temporary next to the final file: `.name.<id>.cfbox-tmp`, at most 255 bytes.

    The leading dot and the suffix match the outgoing side's default excludes; the id
    keeps two downloads of different Box files into one folder apart.
    """
    tail = f".{file_id}{TMP_SUFFIX}"
    return _fit("." + final_name, tail)


def is_temp_name(name: str) -> bool:
    return name.startswith(".") and name.endswith(TMP_SUFFIX)


def backoff_delay(attempts: int, retry_after: float | None = None, *, base: float = 5.0,
                  cap: float = 900.0, rng: random.Random | None = None) -> float:
    """Seconds until the next attempt: exponential with +-50 % jitter, never sooner
    than Box's Retry-After (jitter spreads the retries of many workstations)."""
    rng = rng or random
    n = max(attempts, 1)
    delay = min(cap, base * (2 ** (n - 1)))
    delay *= 0.5 + rng.random()
    if retry_after is not None:
        delay = max(delay, float(retry_after))
    return delay

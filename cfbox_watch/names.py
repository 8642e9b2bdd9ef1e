"""Name rules for both directions.

Outgoing: Box rejects (or, worse, silently "sanitizes") some names, so the uploader
checks a name locally first and fails that one file with a clear reason instead of
burning an API call or ending up with a differently named file on Box.

Incoming: a name chosen by a vendor on Box is untrusted input that becomes a path on
the studio's disk.  It must never climb out of the incoming folder, hide as `.`/`..`,
smuggle a control character into a shell script or log line, or exceed what the
filesystem can store.

Everything here is pure (no disk, no Box) so both directions share one tested copy.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path, PurePosixPath
from typing import Iterable

from cfbox_watch.errors import ItemError

BOX_MAX_NAME_CHARS = 255
LOCAL_MAX_NAME_BYTES = 255  # NAME_MAX on ext4, xfs, btrfs, zfs

# Categories that print nothing a human can see or that break paths and logs:
# Cc = C0/C1 controls (incl. NUL, tab, newline, DEL), Cs = lone surrogates (not
# encodable), Zl/Zp = line/paragraph separators.  Format characters (Cf: zero-width
# joiners in emoji) and non-ASCII spaces (Zs: no-break space, ideographic space, common
# in Japanese file names) are printable enough for Box and must stay allowed.
_NON_PRINTABLE_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})


class UnsafeNameError(ItemError):
    """A name coming from Box cannot safely become a local path; only that item fails."""


def nfc(name: str) -> str:
    """NFC-normalise a name.

    macOS hands out NFD names and Linux keeps whatever bytes it gets, so the same
    visible name can arrive in two spellings; comparing NFC forms keeps us from
    uploading "Café.jpg" twice or overwriting the wrong local file.
    """
    return unicodedata.normalize("NFC", name)


def casefold_key(name: str) -> str:
    """Key under which Box considers two names in one folder the same item.

    Box names are unique per folder ignoring case (across files and folders), so
    planners use this key to predict a 409 before making the call.
    """
    return nfc(name).casefold()


def _first_non_printable(name: str) -> str | None:
    for ch in name:
        if unicodedata.category(ch) in _NON_PRINTABLE_CATEGORIES:
            return ch
    return None


def _describe_char(ch: str) -> str:
    return f"U+{ord(ch):04X}"


def box_name_problem(name: str) -> str | None:
    """Why Box would refuse `name` as a file or folder name, or None when it is fine.

    The reasons are phrased for the studio operator who has to rename the file.
    """
    if not isinstance(name, str):
        return "the name is not text"
    if name == "":
        return "the name is empty"
    if name in (".", ".."):
        return f"Box does not allow an item named {name!r}"
    if "/" in name or "\\" in name:
        return "Box does not allow '/' or '\\' in names; rename the file without them"
    if name != name.strip(" "):
        return "Box does not allow names that start or end with a space; remove the space"
    bad = _first_non_printable(name)
    if bad is not None:
        return (
            f"the name contains the non-printable character {_describe_char(bad)}, "
            "which Box does not allow; rename the file"
        )
    if len(name) > BOX_MAX_NAME_CHARS:
        return (
            f"the name is {len(name)} characters long; Box allows at most "
            f"{BOX_MAX_NAME_CHARS}; shorten it"
        )
    return None


def local_name_problem(name: bytes | str) -> str | None:
    """Why a name received from Box must not become a local file or folder name.

    Accepts bytes (raw from the wire) or str; a str holding surrogate escapes (as
    os.fsdecode makes of undecodable bytes) counts as not valid UTF-8.
    """
    if isinstance(name, bytes):
        try:
            text = name.decode("utf-8", errors="strict")
        except UnicodeDecodeError:
            return "the name is not valid UTF-8"
    elif isinstance(name, str):
        text = name
    else:
        return "the name is not text"
    try:
        encoded = text.encode("utf-8", errors="strict")
    except UnicodeEncodeError:
        return "the name is not valid UTF-8"
    if text == "":
        return "the name is empty"
    if text in (".", ".."):
        return f"the name {text!r} would refer to a folder itself, not a file"
    if "/" in text:
        return "the name contains '/', which would create a path outside the item's folder"
    if "\x00" in text:
        return "the name contains a NUL character"
    bad = _first_non_printable(text)
    if bad is not None:
        return f"the name contains the control character {_describe_char(bad)}"
    if len(encoded) > LOCAL_MAX_NAME_BYTES:
        return (
            f"the name is {len(encoded)} bytes in UTF-8; local file systems allow at most "
            f"{LOCAL_MAX_NAME_BYTES}"
        )
    return None


def _split_parts(relparts: str | os.PathLike | Iterable[str]) -> list[str]:
    if isinstance(relparts, (str, os.PathLike)):
        text = os.fspath(relparts)
        if isinstance(text, bytes):
            raise UnsafeNameError("the path is bytes, expected text")
        if text.startswith("/"):
            raise UnsafeNameError(f"the path {text!r} is absolute; expected a relative path")
        return [p for p in text.split("/") if p != ""]
    parts = list(relparts)
    for p in parts:
        if not isinstance(p, str):
            raise UnsafeNameError(f"the path part {p!r} is not text")
    return parts


def _is_within(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def safe_join(root: Path, relparts: str | os.PathLike | Iterable[str]) -> Path:
    """Join untrusted relative parts under `root`, refusing anything that would land
    elsewhere.

    `relparts` is a "a/b/c.jpg" string or a sequence of single names (as Box gives a
    path: one name per folder level).  Every part must pass `local_name_problem`; the
    result must also stay under root after resolving symlinks that already exist, so
    a symlink planted inside the incoming folder cannot redirect a download.
    Raises UnsafeNameError naming the offending part.
    """
    root = Path(root)
    parts = _split_parts(relparts)
    if not parts:
        raise UnsafeNameError("the relative path is empty")
    for part in parts:
        problem = local_name_problem(part)
        if problem is not None:
            raise UnsafeNameError(f"unsafe name {part!r}: {problem}")
    joined = root.joinpath(*parts)
    # Lexical check first (cheap, independent of the disk), then the real one.
    if not _is_within(PurePosixPath(os.path.normpath(joined)), PurePosixPath(os.path.normpath(root))):
        raise UnsafeNameError(f"the path {'/'.join(parts)!r} would leave {root}")
    real_root = root.resolve(strict=False)
    real = joined.resolve(strict=False)
    if real == real_root or not _is_within(real, real_root):
        raise UnsafeNameError(
            f"the path {'/'.join(parts)!r} would leave {root} (a symbolic link points elsewhere)"
        )
    return joined

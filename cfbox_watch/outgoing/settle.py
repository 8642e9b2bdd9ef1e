"""When is a local file finished?  Readiness rules and cheap image completeness checks.

Nothing tells us that an export is finished: Capture One, Photoshop, `cp` and SMB
clients all write in pieces.  The portable signal is that size, mtime and inode stay
the same for `settle_time` (inode too, because write-temp-then-rename swaps the file
under the same name with the same size).  For the common image formats a truncated
file is also recognisable from its bytes, which catches an export that stalled for
longer than `settle_time` (a full disk, a dropped share) before it reaches a client.
"""

from __future__ import annotations

import os
import struct
from typing import BinaryIO

from cfbox_watch.outgoing.scanner import FileStat


def same_stat(a: FileStat | None, b: FileStat | None) -> bool:
    return (a is not None and b is not None and a.size == b.size
            and a.mtime_ns == b.mtime_ns and a.inode == b.inode)


def settled_at(stable_since: float, settle_time: float) -> float:
    """The earliest time a file unchanged since `stable_since` counts as ready."""
    return stable_since + settle_time


def is_settled(stable_since: float, now: float, settle_time: float) -> bool:
    return now >= settled_at(stable_since, settle_time)


# --- image completeness --------------------------------------------------------------

_TAIL = 4096


def _tail(f: BinaryIO, size: int, n: int = _TAIL) -> bytes:
    f.seek(max(0, size - n))
    return f.read(n)


def _jpeg(f: BinaryIO, size: int) -> str | None:
    if f.read(2) != b"\xff\xd8":
        return "JPEG does not start with the SOI marker"
    # Some writers pad after EOI; only zero/whitespace padding is tolerated.
    tail = _tail(f, size).rstrip(b"\x00\r\n\t ")
    if not tail.endswith(b"\xff\xd9"):
        return "JPEG is truncated (no end-of-image marker)"
    return None


def _png(f: BinaryIO, size: int) -> str | None:
    if f.read(8) != b"\x89PNG\r\n\x1a\n":
        return "PNG signature is wrong"
    if not _tail(f, size, 12).endswith(b"IEND\xaeB`\x82"):
        return "PNG is truncated (no IEND chunk)"
    return None


def _tiff(f: BinaryIO, size: int) -> str | None:
    head = f.read(16)
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        endian = "<" if head[:2] == b"II" else ">"
        (ifd,) = struct.unpack(endian + "I", head[4:8])
        if ifd < 8 or ifd + 2 > size:
            return "TIFF is truncated (first IFD lies beyond the end)"
        f.seek(ifd)
        (count,) = struct.unpack(endian + "H", f.read(2))
        if ifd + 2 + 12 * count + 4 > size:
            return "TIFF is truncated (first IFD is cut off)"
        return None
    if head[:4] in (b"II+\x00", b"MM\x00+"):  # BigTIFF
        endian = "<" if head[:2] == b"II" else ">"
        (ifd,) = struct.unpack(endian + "Q", head[8:16])
        if ifd < 16 or ifd + 8 > size:
            return "BigTIFF is truncated (first IFD lies beyond the end)"
        return None
    return "TIFF header is wrong"


def _psd(f: BinaryIO, size: int) -> str | None:
    head = f.read(26)
    if len(head) < 26 or head[:4] != b"8BPS":
        return "PSD header is incomplete"
    (version,) = struct.unpack(">H", head[4:6])
    if version not in (1, 2):
        return "PSD version is unknown"
    pos = 26
    # colour mode data, image resources: 4-byte lengths; layer/mask: 4 (PSD) or 8 (PSB)
    for width in (4, 4, 4 if version == 1 else 8):
        if pos + width > size:
            return "PSD is truncated (section header beyond the end)"
        f.seek(pos)
        (length,) = struct.unpack(">I" if width == 4 else ">Q", f.read(width))
        pos += width + length
        if pos > size:
            return "PSD is truncated (a section runs past the end)"
    if pos + 2 > size:
        return "PSD is truncated (no image data)"
    return None


_CHECKS = {
    ".jpg": _jpeg, ".jpeg": _jpeg, ".png": _png,
    ".tif": _tiff, ".tiff": _tiff, ".psd": _psd, ".psb": _psd,
}


def image_problem(path: str | os.PathLike, size: int) -> str | None:
    """Why this image looks incomplete, or None (also None for formats we do not check)."""
    check = _CHECKS.get(os.path.splitext(str(path))[1].lower())
    if check is None:
        return None
    if size == 0:
        return "image file is empty"
    try:
        with open(path, "rb") as f:
            return check(f, size)
    except (OSError, struct.error) as e:
        return f"image could not be read: {e.__class__.__name__}"

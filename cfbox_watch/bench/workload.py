"""Local trees and cfbox.yaml files for the benchmarks.

Files look like what a studio exports: JPEGs (SOI ... EOI, so the daemon's truncated-image
check passes them) in shoot folders of 100, each with distinct bytes so that no upload is
a duplicate of another."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

PER_FOLDER = 100


def jpeg_payload(size: int) -> bytes:
    if size < 16:
        raise ValueError("benchmark files are at least 16 bytes")
    return b"\xff\xd8\xff\xe0" + os.urandom(size - 6) + b"\xff\xd9"


def unique(payload: bytes, i: int) -> bytes:
    """Same size, distinct content: the file index sits just after the SOI marker."""
    return payload[:4] + i.to_bytes(8, "big") + payload[12:]


def relpath(i: int) -> str:
    return f"shoot{i // PER_FOLDER:04d}/img{i:06d}.jpg"


def make_tree(root: Path, n: int, size: int, *, start: int = 0) -> int:
    """n JPEG-shaped files of `size` bytes under root; returns the bytes written."""
    root.mkdir(parents=True, exist_ok=True)
    payload = jpeg_payload(size)
    made: set[str] = set()
    for i in range(start, start + n):
        rel = relpath(i)
        d = rel.rpartition("/")[0]
        if d not in made:
            (root / d).mkdir(parents=True, exist_ok=True)
            made.add(d)
        with open(root / rel, "wb") as f:
            f.write(unique(payload, i))
    return n * size


def make_big(path: Path, size: int, block: int = 8 << 20) -> None:
    """One big file written in blocks (never all in memory), each block distinct."""
    path.parent.mkdir(parents=True, exist_ok=True)
    base = os.urandom(block)
    with open(path, "wb") as f:
        left, i = size, 0
        while left > 0:
            n = min(block, left)
            f.write(unique(base, i)[:n])
            left -= n
            i += 1


def write_config(path: Path, *, state_dir: Path, connection: dict, delivery: list[dict] | None = None,
                 post_production: list[dict] | None = None, **top) -> Path:
    """A cfbox.yaml as a user would write it (the daemon loads and validates it)."""
    doc = {"state_dir": str(state_dir), "log_level": "info", "connections": {"emu": connection}}
    doc.update(top)
    if delivery:
        doc["delivery"] = delivery
    if post_production:
        doc["post_production"] = post_production
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path

"""A streaming multipart/form-data reader: parts are read in order straight from the
socket, so a multi-gigabyte upload never sits in memory and the server can see that
the `attributes` part came before the `file` part, as Box requires."""

from __future__ import annotations

import re

from cfbox_watch.emulator.http import ApiError, BodyReader

READ = 256 * 1024


def boundary_of(content_type: str | None) -> bytes:
    m = re.search(r'boundary="?([^";]+)"?', content_type or "")
    if not content_type or not content_type.lower().startswith("multipart/form-data") or not m:
        raise ApiError(400, "bad_request", "Expected a multipart/form-data body with a boundary")
    return m.group(1).encode()


class Multipart:
    def __init__(self, body: BodyReader, boundary: bytes):
        self.body = body
        self.sep = b"\r\n--" + boundary
        self.buf = b"\r\n"            # lets the first delimiter match the same separator
        self.finished = False
        self.in_part = False

    def _fill(self) -> bool:
        data = self.body.read(READ)
        if not data:
            return False
        self.buf += data
        return True

    def next_part(self) -> tuple[str, str | None] | None:
        """Advance to the next part; (field name, filename) or None at the end."""
        if self.in_part:
            for _ in self.part_chunks():
                pass
        if self.finished:
            return None
        while True:
            i = self.buf.find(self.sep)
            if i >= 0 and len(self.buf) >= i + len(self.sep) + 2:
                break
            if not self._fill():
                raise ApiError(400, "bad_request", "Malformed multipart body: boundary not found")
        tail = self.buf[i + len(self.sep): i + len(self.sep) + 2]
        self.buf = self.buf[i + len(self.sep) + 2:]
        if tail == b"--":
            self.finished = True
            return None
        while b"\r\n\r\n" not in self.buf:
            if len(self.buf) > 64 * 1024 or not self._fill():
                raise ApiError(400, "bad_request", "Malformed multipart body: part headers not terminated")
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        disp = ""
        for line in head.decode("utf-8", "replace").split("\r\n"):
            k, _, v = line.partition(":")
            if k.strip().lower() == "content-disposition":
                disp = v
        name = re.search(r'\bname="([^"]*)"', disp)
        filename = re.search(r'filename="([^"]*)"', disp)
        self.in_part = True
        return (name.group(1) if name else ""), (filename.group(1) if filename else None)

    def part_chunks(self):
        """Yield the current part's bytes up to (not including) the next delimiter."""
        keep = len(self.sep) + 2
        while True:
            i = self.buf.find(self.sep)
            if i >= 0:
                data, self.buf = self.buf[:i], self.buf[i:]
                self.in_part = False
                if data:
                    yield data
                return
            if len(self.buf) > keep:
                data, self.buf = self.buf[:-keep], self.buf[-keep:]
                yield data
            if not self._fill():
                raise ApiError(400, "bad_request", "Malformed multipart body: ended inside a part")

    def part_bytes(self, limit: int = 1 << 20) -> bytes:
        out = bytearray()
        for c in self.part_chunks():
            out += c
            if len(out) > limit:
                raise ApiError(400, "bad_request", "Multipart field too large")
        return bytes(out)

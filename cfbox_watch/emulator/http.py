"""HTTP plumbing shared by every handler: the request body reader (Content-Length or
chunked, optionally bandwidth-capped), API errors, and the response object.

Handlers raise `ApiError` for anything Box would answer with an error body, so each
handler reads as the happy path plus the checks Box makes."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from cfbox_watch.emulator.shapes import error_body

CHUNK = 64 * 1024


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, context_info: dict | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.context_info = context_info
        self.headers = headers or {}

    def response(self) -> "Response":
        return Response.json(self.status, error_body(self.status, self.code, self.message, self.context_info),
                             headers=self.headers)


class OAuthError(ApiError):
    """OAuth endpoints answer `{"error", "error_description"}` instead of Box's error body."""

    def response(self) -> "Response":
        return Response.json(self.status, {"error": self.code, "error_description": self.message})


class Throttle:
    """Sleeps so that bytes pass at most at `rate` bytes/s (None: no cap)."""

    def __init__(self, rate_fn: Callable[[], float | None]):
        self.rate_fn = rate_fn
        self.start = time.monotonic()
        self.count = 0

    def passed(self, n: int) -> None:
        rate = self.rate_fn()
        self.count += n
        if rate:
            ahead = self.count / rate - (time.monotonic() - self.start)
            if ahead > 0:
                time.sleep(ahead)


class BodyReader:
    """Reads exactly the request body from the socket, never more (keep-alive safe)."""

    def __init__(self, rfile, headers, throttle: Throttle):
        self.rfile = rfile
        self.throttle = throttle
        self.chunked = "chunked" in (headers.get("Transfer-Encoding") or "").lower()
        self.remaining = 0 if self.chunked else int(headers.get("Content-Length") or 0)
        self.length = None if self.chunked else self.remaining
        self.chunk_left = 0
        self.done = not self.chunked and self.remaining == 0
        self.consumed = 0

    def read(self, n: int = CHUNK) -> bytes:
        if self.done:
            return b""
        if self.chunked:
            if self.chunk_left == 0:
                line = self.rfile.readline(1024).strip()
                size = int(line.split(b";")[0] or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    self.done = True
                    return b""
                self.chunk_left = size
            data = self.rfile.read(min(n, self.chunk_left))
            self.chunk_left -= len(data)
            if self.chunk_left == 0:
                self.rfile.readline(16)
        else:
            data = self.rfile.read(min(n, self.remaining))
            self.remaining -= len(data)
            if self.remaining == 0:
                self.done = True
        if not data:
            self.done = True
            raise ConnectionError("client closed the connection mid-body")
        self.consumed += len(data)
        self.throttle.passed(len(data))
        return data

    def read_all(self, limit: int = 4 << 20) -> bytes:
        buf = bytearray()
        while not self.done:
            buf += self.read()
            if len(buf) > limit:
                raise ApiError(413, "request_entity_too_large", "Request body too large")
        return bytes(buf)

    def drain(self) -> None:
        while not self.done:
            self.read(1 << 20)


@dataclass
class Response:
    status: int
    headers: dict = field(default_factory=dict)
    body: bytes = b""
    file: Path | None = None          # stream this file's bytes instead of `body`
    file_start: int = 0
    file_length: int = 0
    is_download: bool = False         # subject to corrupt_download faults

    @classmethod
    def json(cls, status: int, obj: Any, headers: dict | None = None) -> "Response":
        return cls(status, {"Content-Type": "application/json", **(headers or {})},
                   json.dumps(obj).encode())

    @classmethod
    def empty(cls, status: int, headers: dict | None = None) -> "Response":
        return cls(status, dict(headers or {}))


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: Any
    body: BodyReader
    base_url: str
    params: dict[str, str] = field(default_factory=dict)
    user: str | None = None

    def json(self) -> dict:
        raw = self.body.read_all()
        if not raw:
            return {}
        try:
            obj = json.loads(raw)
        except ValueError:
            raise ApiError(400, "bad_request", "Request body is not valid JSON") from None
        if not isinstance(obj, dict):
            raise ApiError(400, "bad_request", "Request body must be a JSON object")
        return obj

    def fields(self) -> list[str] | None:
        f = self.query.get("fields")
        return [x.strip() for x in f.split(",") if x.strip()] if f else None

    def int_query(self, name: str, default: int, lo: int, hi: int) -> int:
        raw = self.query.get(name)
        if raw is None or raw == "":
            return default
        try:
            v = int(raw)
        except ValueError:
            raise ApiError(400, "bad_request", f"Invalid value '{raw}' for query parameter '{name}'") from None
        if v < lo or v > hi:
            raise ApiError(400, "bad_request", f"'{name}' must be between {lo} and {hi}, got {v}")
        return v

"""The download host (Box: dl.boxcloud.com): short-lived links, no bearer token,
byte ranges (206 / 416) streamed from the content file."""

from __future__ import annotations

import re
from urllib.parse import quote

from cfbox_watch.emulator.http import ApiError, Request, Response


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, length) for a single `bytes=` range; None for the whole file.
    Raises ApiError 416 when the range cannot be satisfied."""
    if not header:
        return None
    m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header)
    if not m or (m.group(1) == "" and m.group(2) == ""):
        return None  # RFC 9110: ignore a Range header we do not understand
    first, last = m.group(1), m.group(2)
    if first == "":
        n = int(last)
        if n == 0:
            raise _unsatisfiable(size)
        start = max(0, size - n)
        end = size - 1
    else:
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
        if start >= size or end < start:
            raise _unsatisfiable(size)
    return start, end - start + 1


def _unsatisfiable(size: int) -> ApiError:
    return ApiError(416, "requested_range_not_satisfiable", "The requested range is not satisfiable",
                    headers={"Content-Range": f"bytes */{size}"})


def serve(app, req: Request) -> Response:
    vid = app.download_target(req.params["token"])
    if vid is None:
        raise ApiError(404, "not_found", "Download link unknown or expired; ask the API for a new one")
    v = app.store.version(vid)
    path = app.store.blob_path(vid)
    size = v["size"]
    rng = parse_range(req.headers.get("Range"), size)
    headers = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes",
               "Content-Disposition": f"attachment; filename*=UTF-8''{quote(v['name'])}", "ETag": f'"{v["sha1"]}"'}
    if rng is None:
        return Response(200, headers, file=path, file_start=0, file_length=size, is_download=True)
    start, length = rng
    headers["Content-Range"] = f"bytes {start}-{start + length - 1}/{size}"
    return Response(206, headers, file=path, file_start=start, file_length=length, is_download=True)

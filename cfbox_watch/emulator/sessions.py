"""Chunked upload sessions (Box: upload.box.com/api/2.0/files/upload_sessions).

Parts are kept as one file each under data/parts/<session>/ so a session survives an
emulator restart, as it survives on Box for 7 days; commit concatenates them."""

from __future__ import annotations

import base64
import hashlib
import math
import re
import secrets
import shutil
import time

from cfbox_watch.emulator.http import ApiError, Request, Response
from cfbox_watch.emulator.items import check_if_match, check_name, conflict_error, emit, visible, visible_folder_or_root
from cfbox_watch.emulator.shapes import item_full
from cfbox_watch.emulator.store import iso
from cfbox_watch.emulator.uploads import receive_to_file


def _json(app, req: Request, s: dict) -> dict:
    base = f"{req.base_url}/api/2.0/files/upload_sessions/{s['id']}"
    done = app.store.q1("SELECT COUNT(*) AS n FROM parts WHERE session_id=?", (s["id"],))["n"]
    return {"id": s["id"], "type": "upload_session", "session_expires_at": iso(s["expires_at"]),
            "part_size": s["part_size"], "total_parts": s["total_parts"], "num_parts_processed": done,
            "session_endpoints": {"upload_part": base, "commit": base + "/commit", "abort": base,
                                  "list_parts": base + "/parts", "status": base, "log_event": base + "/log"}}


def _size(body: dict) -> int:
    size = body.get("file_size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ApiError(400, "bad_request", "'file_size' is required and must be a non-negative integer")
    return size


def _new_session(app, req: Request, *, folder_id: str | None, file_id: str | None, name: str | None,
                 size: int) -> Response:
    if size < int(app.settings["chunk_min"]):
        raise ApiError(400, "file_size_too_small",
                       f"File size {size} is below the minimum for chunked uploads ({app.settings['chunk_min']} bytes)")
    app.check_size(size)
    part = int(app.settings["part_size"])
    sid = secrets.token_hex(16).upper()
    now = time.time()
    app.store.x("INSERT INTO sessions (id, user_id, folder_id, file_id, file_name, file_size, part_size,"
                " total_parts, created_at, expires_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (sid, req.user, folder_id, file_id, name, size, part, max(1, math.ceil(size / part)),
                 now, now + float(app.settings["session_ttl"])))
    (app.store.parts_dir / sid).mkdir(parents=True, exist_ok=True)
    return Response.json(201, _json(app, req, _session(app, req, sid)))


def create_session(app, req: Request) -> Response:
    body = req.json()
    folder_id, name = body.get("folder_id"), body.get("file_name")
    if not isinstance(folder_id, str) or not folder_id:
        raise ApiError(400, "missing_destination", "'folder_id' is required")
    check_name(name)
    size = _size(body)
    visible_folder_or_root(app, req.user, folder_id)
    clash = app.store.conflict(folder_id, name, req.user)
    if clash:
        raise conflict_error(app, clash)
    return _new_session(app, req, folder_id=folder_id, file_id=None, name=name, size=size)


def create_version_session(app, req: Request) -> Response:
    row = visible(app, req.user, req.params["id"], "file")
    body = req.json()
    size = _size(body)
    name = body.get("file_name")
    if name is not None and name != row["name"]:
        check_name(name)
        clash = app.store.conflict(row["parent_id"], name, req.user, exclude=row["id"])
        if clash:
            raise conflict_error(app, clash)
    return _new_session(app, req, folder_id=None, file_id=row["id"], name=name, size=size)


def _session(app, req: Request, sid: str) -> dict:
    s = app.store.q1("SELECT * FROM sessions WHERE id=?", (sid,))
    if s is None or s["user_id"] != req.user:
        raise ApiError(404, "not_found", "Upload session not found")
    if s["expires_at"] < time.time():
        raise ApiError(410, "session_expired", "The upload session has expired; start a new one")
    return s


def get_session(app, req: Request) -> Response:
    return Response.json(200, _json(app, req, _session(app, req, req.params["id"])))


def _digest(req: Request) -> str:
    """The hex SHA-1 from `Digest: sha=<base64>` (the only algorithm Box accepts)."""
    raw = req.headers.get("Digest") or ""
    m = re.match(r"\s*sha=(\S+)", raw, re.I)
    if not m:
        raise ApiError(400, "bad_request", "Missing or invalid 'Digest' header; expected 'sha=<base64 SHA-1>'")
    try:
        dig = base64.b64decode(m.group(1), validate=True)
    except ValueError:
        raise ApiError(400, "bad_request", "The 'Digest' header is not valid base64") from None
    if len(dig) != 20:
        raise ApiError(400, "bad_request", "The 'Digest' header must hold a SHA-1 (20 bytes)")
    return dig.hex()


def _part_json(p: dict) -> dict:
    return {"part_id": p["part_id"], "offset": p["offset"], "size": p["size"], "sha1": p["sha1"]}


def upload_part(app, req: Request) -> Response:
    s = _session(app, req, req.params["id"])
    want = _digest(req)
    m = re.fullmatch(r"\s*bytes (\d+)-(\d+)/(\d+)\s*", req.headers.get("Content-Range") or "")
    if not m:
        raise ApiError(416, "requested_range_not_satisfiable", "Missing or malformed 'Content-Range: bytes a-b/total'")
    start, end, total = (int(g) for g in m.groups())
    size, part = s["file_size"], s["part_size"]
    last = min(start + part, size) - 1
    if total != size or start % part or start >= size or end != last:
        raise ApiError(416, "requested_range_not_satisfiable",
                       f"Part range must start at a multiple of {part} and be exactly {part} bytes "
                       f"(the last part shorter); total must be {size}")
    if req.body.length is not None and req.body.length != end - start + 1:
        raise ApiError(416, "requested_range_not_satisfiable", "Body length does not match Content-Range")
    existing = app.store.q1("SELECT * FROM parts WHERE session_id=? AND offset=?", (s["id"], start))
    path, sha1, n = receive_to_file(app, iter(lambda: req.body.read(), b""))
    if n != end - start + 1:
        path.unlink(missing_ok=True)
        raise ApiError(416, "requested_range_not_satisfiable", "Body length does not match Content-Range")
    if sha1 != want:
        path.unlink(missing_ok=True)
        raise ApiError(412, "precondition_failed", "The 'Digest' header does not match the part's content")
    if existing is not None:
        path.unlink(missing_ok=True)
        # Box's guide: parts are immutable and re-uploading is not supported.  Whether
        # Box refuses identical bytes too is unconfirmed, hence the switch.
        if existing["sha1"] == sha1 and not app.settings["strict_parts"]:
            return Response.json(200, {"part": _part_json(existing)})
        raise ApiError(409, "range_overlaps_existing_part", "Part overlaps a part already uploaded with other content")
    p = {"part_id": secrets.token_hex(4).upper(), "offset": start, "size": n, "sha1": sha1}
    path.replace(app.store.parts_dir / s["id"] / str(start))
    app.store.x("INSERT INTO parts (session_id, offset, size, part_id, sha1) VALUES (?,?,?,?,?)",
                (s["id"], start, n, p["part_id"], sha1))
    return Response.json(200, {"part": p})


def _parts(app, sid: str) -> list[dict]:
    return app.store.q("SELECT * FROM parts WHERE session_id=? ORDER BY offset", (sid,))


def list_parts(app, req: Request) -> Response:
    s = _session(app, req, req.params["id"])
    parts = _parts(app, s["id"])
    limit = min(req.int_query("limit", 1000, 1, 10 ** 9), 1000)
    offset = req.int_query("offset", 0, 0, 10 ** 9)
    page = parts[offset:offset + limit]
    return Response.json(200, {"entries": [_part_json(p) for p in page], "total_count": len(parts),
                               "limit": limit, "offset": offset, "order": [{"by": "offset", "direction": "ASC"}]})


def abort_session(app, req: Request) -> Response:
    s = _session(app, req, req.params["id"])
    app.store.x("DELETE FROM parts WHERE session_id=?", (s["id"],))
    app.store.x("DELETE FROM sessions WHERE id=?", (s["id"],))
    shutil.rmtree(app.store.parts_dir / s["id"], ignore_errors=True)
    return Response.empty(204)


def commit_session(app, req: Request) -> Response:
    s = _session(app, req, req.params["id"])
    if s["committed_file_id"]:
        row = app.store.item(s["committed_file_id"])
        return Response.json(201, {"total_count": 1, "entries": [item_full(app.store, req.user, row)]})
    want = _digest(req)
    body = req.json()
    given = body.get("parts")
    attrs = body.get("attributes") or {}
    stored = _parts(app, s["id"])
    if not isinstance(given, list) or sorted((str(p.get("part_id")), p.get("offset")) for p in given if isinstance(p, dict)) \
            != sorted((p["part_id"], p["offset"]) for p in stored):
        raise ApiError(400, "bad_request", "'parts' must list exactly the parts uploaded to this session")
    if sum(p["size"] for p in stored) != s["file_size"]:
        raise ApiError(400, "bad_request", "The uploaded parts do not cover the whole file yet")
    file_row = None
    if s["file_id"]:
        file_row = visible(app, req.user, s["file_id"], "file")
        check_if_match(req, file_row)
    def chunks():
        for p in stored:
            with open(app.store.parts_dir / s["id"] / str(p["offset"]), "rb") as f:
                for c in iter(lambda: f.read(1 << 20), b""):
                    yield c

    path, sha1, size = receive_to_file(app, chunks())
    if sha1 != want:
        path.unlink(missing_ok=True)
        raise ApiError(412, "precondition_failed", "The whole-file 'Digest' does not match the uploaded parts")
    if s["commit_calls"] < int(app.settings["commit_202"]):
        # Box may still be assembling the parts: the client must retry after Retry-After
        app.store.x("UPDATE sessions SET commit_calls=commit_calls+1 WHERE id=?", (s["id"],))
        path.unlink(missing_ok=True)
        return Response.empty(202, {"Retry-After": "1"})
    try:
        if file_row is None:
            name = attrs.get("name") or s["file_name"]
            parent_id = (attrs.get("parent") or {}).get("id") or s["folder_id"]
            check_name(name)
            visible_folder_or_root(app, req.user, parent_id)
            with app.store.transaction():
                row = app.create_item("file", name, parent_id, req.user,
                                      content_created_at=attrs.get("content_created_at"),
                                      content_modified_at=attrs.get("content_modified_at"))
                row = app.store.add_version(row["id"], path, sha1, size, req.user, name)
                app.store.x("UPDATE sessions SET committed_file_id=? WHERE id=?", (row["id"], s["id"]))
        else:
            name = attrs.get("name") or s["file_name"] or file_row["name"]
            with app.store.transaction():
                if name != file_row["name"]:
                    check_name(name)
                    clash = app.store.conflict(file_row["parent_id"], name, req.user, exclude=file_row["id"])
                    if clash:
                        raise conflict_error(app, clash)
                    app.store.update_item(file_row["id"], req.user, name=name)
                row = app.store.add_version(file_row["id"], path, sha1, size, req.user, name,
                                            content_modified_at=attrs.get("content_modified_at"))
                app.store.x("UPDATE sessions SET committed_file_id=? WHERE id=?", (row["id"], s["id"]))
    except ApiError:
        path.unlink(missing_ok=True)
        raise
    app.store.x("DELETE FROM parts WHERE session_id=?", (s["id"],))
    shutil.rmtree(app.store.parts_dir / s["id"], ignore_errors=True)
    app.fresh_version(row["version_id"])
    emit(app, "ITEM_UPLOAD", row, req.user)
    return Response.json(201, {"total_count": 1, "entries": [item_full(app.store, req.user, row)]})

"""Direct uploads on the upload host: new files and new versions (multipart), with
Box's checks in Box's order: attributes first, names, permissions, conflicts, the
plan's size limit, then the `Content-MD5` (hex SHA-1) of what actually arrived."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from cfbox_watch.emulator.http import ApiError, Request, Response
from cfbox_watch.emulator.items import (check_if_match, check_name, conflict_error, emit, visible,
                                        visible_folder_or_root)
from cfbox_watch.emulator.multipart import Multipart, boundary_of
from cfbox_watch.emulator.shapes import item_full


def receive_to_file(app, chunks, size_limit: int | None = None) -> tuple[Path, str, int]:
    """Stream bytes to a temp file; (path, sha1 hex, size)."""
    path = app.store.tmp_path()
    h = hashlib.sha1()
    n = 0
    try:
        with open(path, "wb") as f:
            for c in chunks:
                h.update(c)
                f.write(c)
                n += len(c)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path, h.hexdigest(), n


def _attributes(mp: Multipart) -> dict:
    part = mp.next_part()
    if part is None:
        raise ApiError(400, "bad_request", "Missing 'attributes' and 'file' parts")
    if part[0] == "file":
        raise ApiError(400, "metadata_after_file_contents",
                       "The 'attributes' part must come before the 'file' part in the multipart body")
    if part[0] != "attributes":
        raise ApiError(400, "bad_request", f"Unexpected multipart field '{part[0]}'; expected 'attributes'")
    try:
        attrs = json.loads(mp.part_bytes())
    except ValueError:
        raise ApiError(400, "bad_request", "The 'attributes' part is not valid JSON") from None
    if not isinstance(attrs, dict):
        raise ApiError(400, "bad_request", "The 'attributes' part must be a JSON object")
    return attrs


def _file_part(app, req: Request, mp: Multipart) -> tuple[Path, str, int]:
    part = mp.next_part()
    while part is not None and part[0] != "file":
        for _ in mp.part_chunks():
            pass
        part = mp.next_part()
    if part is None:
        raise ApiError(400, "bad_request", "Missing 'file' part")
    path, sha1, size = receive_to_file(app, mp.part_chunks())
    try:
        want = req.headers.get("Content-MD5")
        if want is not None and want.strip().lower() != sha1:
            raise ApiError(400, "bad_digest", "The specified Content-MD5 did not match what was received")
        app.check_size(size)
        app.check_direct_size(size)
    except ApiError:
        path.unlink(missing_ok=True)
        raise
    return path, sha1, size


def upload_file(app, req: Request) -> Response:
    mp = Multipart(req.body, boundary_of(req.headers.get("Content-Type")))
    attrs = _attributes(mp)
    parent = attrs.get("parent")
    if not isinstance(parent, dict) or not isinstance(parent.get("id"), str):
        raise ApiError(400, "bad_request", "'attributes.parent.id' is required")
    name = attrs.get("name")
    check_name(name)
    visible_folder_or_root(app, req.user, parent["id"])
    if req.body.length is not None:  # refuse early, before the bytes arrive (multipart adds < 1 KB)
        app.check_size(max(0, req.body.length - 1024))
        app.check_direct_size(max(0, req.body.length - 1024))
    clash = app.store.conflict(parent["id"], name, req.user)
    if clash:
        raise conflict_error(app, clash)
    with app.reserve(parent["id"], name):
        path, sha1, size = _file_part(app, req, mp)
        try:
            with app.store.transaction():
                row = app.create_item("file", name, parent["id"], req.user,
                                      content_created_at=attrs.get("content_created_at"),
                                      content_modified_at=attrs.get("content_modified_at"))
                row = app.store.add_version(row["id"], path, sha1, size, req.user, name)
        except ApiError:
            path.unlink(missing_ok=True)
            raise
        app.fresh_version(row["version_id"])
    emit(app, "ITEM_UPLOAD", row, req.user)
    return Response.json(201, {"total_count": 1, "entries": [item_full(app.store, req.user, row)]})


def upload_version(app, req: Request) -> Response:
    row = visible(app, req.user, req.params["id"], "file")
    check_if_match(req, row)
    mp = Multipart(req.body, boundary_of(req.headers.get("Content-Type")))
    attrs = _attributes(mp)
    name = attrs.get("name") or row["name"]
    if name != row["name"]:
        check_name(name)
        clash = app.store.conflict(row["parent_id"], name, req.user, exclude=row["id"])
        if clash:
            raise conflict_error(app, clash)
    path, sha1, size = _file_part(app, req, mp)
    with app.store.transaction():
        current = app.store.item(row["id"])
        if current["trashed_at"] or (req.headers.get("If-Match") is not None and str(current["etag"]) != str(row["etag"])):
            path.unlink(missing_ok=True)
            check_if_match(req, current)
            raise ApiError(404, "not_found", "The file was deleted during the upload")
        if name != current["name"]:
            app.store.update_item(row["id"], req.user, name=name)
        row = app.store.add_version(row["id"], path, sha1, size, req.user, name,
                                    content_modified_at=attrs.get("content_modified_at"))
    app.fresh_version(row["version_id"])
    emit(app, "ITEM_UPLOAD", row, req.user)
    return Response.json(200, {"total_count": 1, "entries": [item_full(app.store, req.user, row)]})

"""Users, folders and files: the metadata endpoints under /2.0 (no content bytes)."""

from __future__ import annotations

import base64
import json
import secrets
import time

from cfbox_watch.emulator.http import ApiError, Request, Response
from cfbox_watch.emulator.names import name_problem
from cfbox_watch.emulator.shapes import item_full, item_mini, root_full, select_fields, user_full, version_full


MAX_OFFSET = 9999  # Box: "The maximum offset for offset-based pagination is 9999"


def not_found(kind: str = "item") -> ApiError:
    return ApiError(404, "not_found", f"Not Found: the {kind} does not exist or you do not have access to it")


def visible(app, user: str, item_id: str, kind: str | None) -> dict:
    """The live item as `user` may see it; Box answers 404 for anything else."""
    row = app.store.item(item_id)
    if row is None or (kind and row["type"] != kind) or not app.store.can_see(user, row):
        raise not_found(kind or "item")
    return row


def visible_folder_or_root(app, user: str, folder_id: str) -> dict | None:
    return None if folder_id == "0" else visible(app, user, folder_id, "folder")


def check_name(name) -> None:
    problem = name_problem(name)
    if problem:
        raise ApiError(400, problem[0], problem[1], {"name": name if isinstance(name, str) else None})


def conflict_error(app, row: dict) -> ApiError:
    mini = item_mini(row)
    if row["type"] == "file":
        conflicts = mini if app.settings["conflicts_shape"] == "object" else [mini]
    else:
        conflicts = [mini]
    return ApiError(409, "item_name_in_use", "Item with the same name already exists", {"conflicts": conflicts})


def check_if_match(req: Request, row: dict) -> None:
    want = req.headers.get("If-Match")
    if want is not None and want.strip('"') != str(row["etag"]):
        raise ApiError(412, "precondition_failed", "The resource has been modified. Please retrieve the resource again and retry")


def viewers(app, row: dict) -> set[str]:
    return {u for u in app.store.user_ids() if app.store.can_see(u, row)}


def emit(app, event_type: str, row: dict, actor: str, before: set[str] = frozenset()) -> None:
    """Record an event for everyone who can see the item now or could just before
    (Box's user event stream includes items in collaborated folders)."""
    row = app.store.item(row["id"])
    who = viewers(app, row) | set(before)
    app.store.add_event(event_type, row, actor, {u: item_full(app.store, u, row) for u in who})
    from cfbox_watch.emulator.webhooks import on_item_event

    on_item_event(app, event_type, row, actor)  # V2 webhooks on the item's ancestors


# -- users -------------------------------------------------------------------
def get_me(app, req: Request) -> Response:
    return Response.json(200, select_fields(user_full(app.store, req.user), req.fields()))


# -- folders -----------------------------------------------------------------
def get_folder(app, req: Request) -> Response:
    fid = req.params["id"]
    if fid == "0":
        return Response.json(200, select_fields(root_full(app.store, req.user), req.fields()))
    row = visible(app, req.user, fid, "folder")
    return Response.json(200, select_fields(item_full(app.store, req.user, row), req.fields()))


def _entry(app, req: Request, row: dict, fields: list[str] | None) -> dict:
    if fields:
        return select_fields(item_full(app.store, req.user, row), fields)
    return item_mini(row)


def list_items(app, req: Request) -> Response:
    fid = req.params["id"]
    visible_folder_or_root(app, req.user, fid)
    # Box: a limit above the maximum is lowered to it, not refused
    limit = min(req.int_query("limit", 100, 1, 10 ** 9), 1000)
    fields = req.fields()
    kids = app.store.children(fid, req.user)
    if req.query.get("usemarker", "").lower() == "true":
        after = 0
        if req.query.get("marker"):
            try:
                after = int(json.loads(base64.urlsafe_b64decode(req.query["marker"].encode()))["after"])
            except (ValueError, KeyError, TypeError):
                raise ApiError(400, "invalid_parameter", "Invalid value for 'marker'") from None
        rest = [k for k in kids if int(k["id"]) > after]
        page = rest[:limit]
        nxt = None
        if len(rest) > limit:
            nxt = base64.urlsafe_b64encode(json.dumps({"after": int(page[-1]["id"])}).encode()).decode()
        return Response.json(200, {"entries": [_entry(app, req, k, fields) for k in page], "limit": limit,
                                   "next_marker": nxt, "prev_marker": None,
                                   "order": [{"by": "id", "direction": "ASC"}]})
    offset = req.int_query("offset", 0, 0, 10 ** 9)
    if offset > MAX_OFFSET:
        raise ApiError(400, "bad_request", f"The maximum offset is {MAX_OFFSET}; use marker-based paging (usemarker=true)")
    page = kids[offset:offset + limit]
    return Response.json(200, {"total_count": len(kids), "entries": [_entry(app, req, k, fields) for k in page],
                               "offset": offset, "limit": limit, "order": [{"by": "id", "direction": "ASC"}]})


def _parent_id(body: dict, required: bool) -> str | None:
    parent = body.get("parent")
    if parent is None and not required:
        return None
    if not isinstance(parent, dict) or not isinstance(parent.get("id"), str) or not parent["id"]:
        raise ApiError(400, "bad_request", "'parent.id' is required and must be a string")
    return parent["id"]


def create_folder(app, req: Request) -> Response:
    body = req.json()
    parent_id = _parent_id(body, True)
    name = body.get("name")
    check_name(name)
    visible_folder_or_root(app, req.user, parent_id)
    row = app.create_item("folder", name, parent_id, req.user)
    emit(app, "ITEM_CREATE", row, req.user)
    return Response.json(201, select_fields(item_full(app.store, req.user, row), req.fields()))


def _update(app, req: Request, kind: str) -> Response:
    row = visible(app, req.user, req.params["id"], kind)
    check_if_match(req, row)
    body = req.json()
    new_parent = _parent_id(body, False)
    new_name = body.get("name", row["name"])
    if new_name != row["name"]:
        check_name(new_name)
    target = new_parent or row["parent_id"]
    if new_parent:
        parent_row = visible_folder_or_root(app, req.user, new_parent)
        if kind == "folder" and parent_row is not None and any(
                n["id"] == row["id"] for n in app.store.chain(parent_row)):
            raise ApiError(400, "bad_request", "Cannot move a folder into itself or its own subfolder")
    before = viewers(app, row)
    with app.store.lock:
        clash = app.store.conflict(target, new_name, req.user, exclude=row["id"])
        if clash:
            raise conflict_error(app, clash)
        changes = {}
        if new_name != row["name"]:
            changes["name"] = new_name
        if target != row["parent_id"]:
            changes["parent_id"] = target
        if changes:
            row = app.store.update_item(row["id"], req.user, **changes)
    if "parent_id" in changes:
        emit(app, "ITEM_MOVE", row, req.user, before)
    if "name" in changes:
        emit(app, "ITEM_RENAME", row, req.user, before)
    return Response.json(200, select_fields(item_full(app.store, req.user, row), req.fields()))


def update_folder(app, req: Request) -> Response:
    return _update(app, req, "folder")


def update_file(app, req: Request) -> Response:
    return _update(app, req, "file")


def _trash(app, req: Request, row: dict) -> Response:
    before = viewers(app, row)
    app.store.update_item(row["id"], req.user, trashed_at=app.now_iso())
    emit(app, "ITEM_TRASH", row, req.user, before)
    return Response.empty(204)


def delete_folder(app, req: Request) -> Response:
    row = visible(app, req.user, req.params["id"], "folder")
    check_if_match(req, row)
    if app.store.children(row["id"], req.user) and req.query.get("recursive", "").lower() != "true":
        raise ApiError(400, "folder_not_empty", "Cannot delete - folder not empty")
    return _trash(app, req, row)


# -- files -------------------------------------------------------------------
def get_file(app, req: Request) -> Response:
    row = visible(app, req.user, req.params["id"], "file")
    return Response.json(200, select_fields(item_full(app.store, req.user, row), req.fields()))


def delete_file(app, req: Request) -> Response:
    row = visible(app, req.user, req.params["id"], "file")
    check_if_match(req, row)
    return _trash(app, req, row)


def list_versions(app, req: Request) -> Response:
    row = visible(app, req.user, req.params["id"], "file")
    older = [v for v in app.store.versions(row["id"]) if v["id"] != row["version_id"]]
    older.reverse()
    limit = min(req.int_query("limit", 1000, 1, 10 ** 9), 1000)
    offset = req.int_query("offset", 0, 0, 10 ** 9)
    page = older[offset:offset + limit]
    return Response.json(200, {"total_count": len(older), "entries": [version_full(app.store, v) for v in page],
                               "limit": limit, "offset": offset, "order": [{"by": "created_at", "direction": "DESC"}]})


def download(app, req: Request) -> Response:
    """302 to a short-lived URL the emulator serves itself (Box: dl.boxcloud.com)."""
    row = visible(app, req.user, req.params["id"], "file")
    vid = req.query.get("version") or row["version_id"]
    v = app.store.version(vid)
    if v is None or v["file_id"] != row["id"]:
        raise not_found("file version")
    if app.take_download_202(vid):
        return Response.empty(202, {"Retry-After": "1"})
    token = secrets.token_urlsafe(24)
    now = time.time()
    if len(app.download_links) > 10_000:
        for t, (_, exp) in list(app.download_links.items()):
            if exp < now:
                app.download_links.pop(t, None)
    app.download_links[token] = (vid, now + 900)
    return Response.empty(302, {"Location": f"{req.base_url}/_dl/{token}"})


def preflight(app, req: Request) -> Response:
    """OPTIONS /files/content (new file) and /files/{id}/content (new version)."""
    body = req.json()
    size = body.get("size")
    if size is not None and (not isinstance(size, int) or size < 0):
        raise ApiError(400, "bad_request", "'size' must be a non-negative integer")
    file_id = req.params.get("id")
    if file_id:
        row = visible(app, req.user, file_id, "file")
        name = body.get("name") or row["name"]
        parent_id = row["parent_id"]
    else:
        parent_id = _parent_id(body, True)
        name = body.get("name")
        row = None
    check_name(name)
    visible_folder_or_root(app, req.user, parent_id)
    app.check_size(size or 0)
    clash = app.store.conflict(parent_id, name, req.user, exclude=row["id"] if row else None)
    if clash:
        raise conflict_error(app, clash)
    return Response.json(200, {"upload_url": f"{req.base_url}/api/2.0/files/content", "upload_token": None})

"""The test controls under /_emulator/ (no auth): settings, faults, counters, acting as
the vendor (another Box user who shares folders with the service account) and
inspecting what the emulator holds.  The client side is `control.py`."""

from __future__ import annotations

import json
import re

from cfbox_watch.emulator import provision, webhooks
from cfbox_watch.emulator.http import ApiError, Request, Response
from cfbox_watch.emulator.items import check_name, conflict_error, emit, viewers
from cfbox_watch.emulator.shapes import item_full, item_mini
from cfbox_watch.emulator.uploads import receive_to_file


def _vendor(app) -> str:
    return app.store.meta("vendor_id")


def _row(app, item_id: str, kind: str | None = None) -> dict:
    row = app.store.item(item_id)
    if row is None or row["trashed_at"] or (kind and row["type"] != kind):
        raise ApiError(404, "not_found", f"No live {kind or 'item'} with id {item_id}")
    return row


def info(app, req):
    sa = app.store.meta("service_account_id")
    u = app.store.user(sa)
    return {"folders": provision.folders(app.store), "service_account": {"id": sa, "login": u["login"], "name": u["name"]},
            "vendor": {"id": _vendor(app)}, "settings": app.settings}


def counters(app, req):
    with app.counter_lock:
        return dict(app.counters)


def reset_counters(app, req):
    with app.counter_lock:
        app.counters.clear()
    return {}


def faults(app, req):
    try:
        app.faults.set(**req.json())
    except TypeError as e:
        raise ApiError(400, "bad_request", str(e)) from None
    return {}


def clear_faults(app, req):
    app.faults.clear()
    return {}


def rate_limits(app, req):
    try:
        app.rate_limits.set(**req.json())
    except TypeError as e:
        raise ApiError(400, "bad_request", str(e)) from None
    return {}


def settings(app, req):
    return app.update_settings(**req.json())


def expire_tokens(app, req):
    app.store.expire_tokens()
    return {}


def expire_sessions(app, req):
    app.store.x("UPDATE sessions SET expires_at=0")
    return {}


def vendor_upload(app, req):
    folder_id, name = req.query.get("folder_id", ""), req.query.get("name", "")
    check_name(name)
    vendor = _vendor(app)
    if folder_id != "0":
        _row(app, folder_id, "folder")
    path, sha1, size = receive_to_file(app, iter(lambda: req.body.read(), b""))
    with app.store.transaction():
        existing = app.store.conflict(folder_id, name, vendor)
        if existing is not None and existing["type"] == "folder":
            path.unlink(missing_ok=True)
            raise conflict_error(app, existing)
        before = set()
        if existing is None:
            row = app.store.insert_item(type="file", name=name, parent_id=folder_id, actor=vendor)
        else:
            row = existing
            before = viewers(app, row)
        row = app.store.add_version(row["id"], path, sha1, size, vendor, name)
    app.fresh_version(row["version_id"])
    emit(app, "ITEM_UPLOAD", row, vendor, before)
    return item_full(app.store, vendor, row)


def vendor_mkdir(app, req):
    body = req.json()
    check_name(body.get("name"))
    if body.get("parent_id") != "0":
        _row(app, str(body.get("parent_id")), "folder")
    row = app.create_item("folder", body["name"], str(body["parent_id"]), _vendor(app))
    emit(app, "ITEM_CREATE", row, _vendor(app))
    return item_full(app.store, _vendor(app), row)


def vendor_move(app, req):
    body = req.json()
    vendor = _vendor(app)
    row = _row(app, str(body["item_id"]), body.get("type"))
    new_parent = str(body.get("new_parent_id") or row["parent_id"])
    name = body.get("name") or row["name"]
    check_name(name)
    before = viewers(app, row)
    with app.store.lock:
        clash = app.store.conflict(new_parent, name, vendor, exclude=row["id"])
        if clash:
            raise conflict_error(app, clash)
        moved = new_parent != row["parent_id"]
        renamed = name != row["name"]
        row = app.store.update_item(row["id"], vendor, parent_id=new_parent, name=name)
    if moved:
        emit(app, "ITEM_MOVE", row, vendor, before)
    if renamed:
        emit(app, "ITEM_RENAME", row, vendor, before)
    return item_full(app.store, vendor, row)


def vendor_trash(app, req):
    body = req.json()
    row = _row(app, str(body["item_id"]), body.get("type"))
    before = viewers(app, row)
    app.store.update_item(row["id"], _vendor(app), trashed_at=app.now_iso())
    emit(app, "ITEM_TRASH", row, _vendor(app), before)
    return {}


def _tree(app, row: dict) -> dict:
    node = {"id": row["id"], "name": row["name"], "type": row["type"]}
    if row["type"] == "file":
        node.update(size=row["size"], sha1=row["sha1"], version_count=len(app.store.versions(row["id"])),
                    etag=str(row["etag"]))
    else:
        node["children"] = [_tree(app, k) for k in app.store.q(
            "SELECT * FROM items WHERE parent_id=? AND trashed_at IS NULL ORDER BY name_key", (row["id"],))]
    return node


def tree(app, req):
    return _tree(app, _row(app, req.params["id"], "folder"))


def file_content(app, req):
    row = _row(app, req.params["id"], "file")
    path = app.store.blob_path(row["version_id"])
    return Response(200, {"Content-Type": "application/octet-stream"}, file=path, file_length=row["size"])


def find(app, req):
    row = _row(app, req.query.get("folder_id", ""), "folder")
    for part in [p for p in req.query.get("path", "").split("/") if p]:
        nxt = [k for k in app.store.q("SELECT * FROM items WHERE parent_id=? AND trashed_at IS NULL", (row["id"],))
               if k["name"] == part]
        if not nxt:
            return None
        row = nxt[0]
    return {**item_mini(row), "size": row["size"], "parent_id": row["parent_id"],
            "version_count": len(app.store.versions(row["id"])) if row["type"] == "file" else None}


def item_count(app, req):
    _row(app, req.params["id"], "folder")
    return {"count": len(app.store.descendants(req.params["id"]))}


ROUTES = [
    ("GET", r"/_emulator/info", info),
    ("GET", r"/_emulator/counters", counters),
    ("POST", r"/_emulator/counters/reset", reset_counters),
    ("POST", r"/_emulator/faults", faults),
    ("DELETE", r"/_emulator/faults", clear_faults),
    ("POST", r"/_emulator/rate_limits", rate_limits),
    ("POST", r"/_emulator/settings", settings),
    ("POST", r"/_emulator/expire_tokens", expire_tokens),
    ("POST", r"/_emulator/expire_sessions", expire_sessions),
    ("POST", r"/_emulator/vendor/upload", vendor_upload),
    ("POST", r"/_emulator/vendor/mkdir", vendor_mkdir),
    ("POST", r"/_emulator/vendor/move", vendor_move),
    ("POST", r"/_emulator/vendor/trash", vendor_trash),
    ("GET", r"/_emulator/tree/(?P<id>\w+)", tree),
    ("GET", r"/_emulator/files/(?P<id>\w+)/content", file_content),
    ("GET", r"/_emulator/find", find),
    ("GET", r"/_emulator/item_count/(?P<id>\w+)", item_count),
    *webhooks.CONTROL_ROUTES,
]


def dispatch(app, req: Request) -> Response:
    for method, pattern, func in ROUTES:
        m = re.fullmatch(pattern, req.path)
        if m and method == req.method:
            req.params = m.groupdict()
            try:
                out = func(app, req)
            except (KeyError, TypeError, ValueError) as e:
                raise ApiError(400, "bad_request", f"Bad control request {req.method} {req.path}: {e!r}") from None
            return out if isinstance(out, Response) else Response.json(200, out)
    raise ApiError(404, "not_found", f"No emulator control {req.method} {req.path}")

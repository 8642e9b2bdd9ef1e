"""Box's JSON shapes (OpenAPI: File, Folder, User, Items, FileVersion, ClientError ...)
built from store rows, as seen by one user (path and parent depend on the viewer)."""

from __future__ import annotations

import uuid

from cfbox_watch.emulator.store import Store

ROOT_MINI = {"type": "folder", "id": "0", "sequence_id": None, "etag": None, "name": "All Files"}


def error_body(status: int, code: str, message: str, context_info: dict | None = None) -> dict:
    return {
        "type": "error", "status": status, "code": code, "message": message,
        "context_info": context_info or {},
        "help_url": "https://developer.box.com/guides/api-calls/permissions-and-errors/common-errors/",
        "request_id": uuid.uuid4().hex[:16],
    }


def user_mini(store: Store, uid: str | None) -> dict | None:
    if uid is None:
        return None
    u = store.user(uid)
    if u is None:
        return {"type": "user", "id": uid, "name": "", "login": ""}
    return {"type": "user", "id": u["id"], "name": u["name"], "login": u["login"]}


def user_full(store: Store, uid: str) -> dict:
    u = store.user(uid)
    return {**user_mini(store, uid), "created_at": u["created_at"], "modified_at": u["created_at"],
            "language": "en", "timezone": "UTC", "space_amount": 10 ** 15, "space_used": 0,
            "max_upload_size": 5 * 10 ** 9, "status": "active", "job_title": "", "phone": "",
            "address": "", "avatar_url": ""}


def item_mini(row: dict) -> dict:
    out = {"type": row["type"], "id": row["id"], "sequence_id": str(row["etag"]),
           "etag": str(row["etag"]), "name": row["name"]}
    if row["type"] == "file":
        out["sha1"] = row["sha1"] or ""
        out["file_version"] = {"type": "file_version", "id": row["version_id"], "sha1": row["sha1"] or ""}
    return out


def parent_mini(store: Store, viewer: str, row: dict) -> dict | None:
    path = store.visible_path(viewer, row)
    if not path:
        return dict(ROOT_MINI)
    return item_mini(path[-1])


def item_full(store: Store, viewer: str, row: dict) -> dict:
    path = [dict(ROOT_MINI)] + [item_mini(p) for p in store.visible_path(viewer, row)]
    out = {
        **item_mini(row),
        "description": "",
        "size": row["size"] if row["type"] == "file" else folder_size(store, row),
        "path_collection": {"total_count": len(path), "entries": path},
        "created_at": row["created_at"], "modified_at": row["modified_at"],
        "trashed_at": row["trashed_at"], "purged_at": None,
        "content_created_at": row["content_created_at"], "content_modified_at": row["content_modified_at"],
        "created_by": user_mini(store, row["created_by"]),
        "modified_by": user_mini(store, row["modified_by"]),
        "owned_by": user_mini(store, row["owner_id"]),
        "shared_link": None,
        "parent": path[-1] if len(path) > 1 or row["id"] != "0" else None,
        "item_status": "trashed" if row["trashed_at"] else "active",
    }
    if row["type"] == "folder":
        out["folder_upload_email"] = None
        kids = store.children(row["id"], viewer)
        out["item_collection"] = {"total_count": len(kids), "entries": [item_mini(k) for k in kids[:100]],
                                  "offset": 0, "limit": 100, "order": [{"by": "type", "direction": "ASC"}]}
    return out


def folder_size(store: Store, row: dict) -> int:
    return sum(d["size"] for d in store.descendants(row["id"]) if d["type"] == "file")


def root_full(store: Store, viewer: str) -> dict:
    kids = store.children("0", viewer)
    return {**ROOT_MINI, "description": "", "size": 0,
            "path_collection": {"total_count": 0, "entries": []},
            "created_at": None, "modified_at": None, "trashed_at": None, "purged_at": None,
            "content_created_at": None, "content_modified_at": None,
            "created_by": {"type": "user", "id": "", "name": "", "login": ""},
            "modified_by": user_mini(store, viewer), "owned_by": user_mini(store, viewer),
            "shared_link": None, "folder_upload_email": None, "parent": None, "item_status": "active",
            "item_collection": {"total_count": len(kids), "entries": [item_mini(k) for k in kids[:100]],
                                "offset": 0, "limit": 100, "order": [{"by": "type", "direction": "ASC"}]}}


def select_fields(full: dict, fields: list[str] | None) -> dict:
    """Box's `fields=`: the base (type, id, etag) plus exactly the listed fields."""
    if not fields:
        return full
    out = {k: full[k] for k in ("type", "id", "etag") if k in full}
    for f in fields:
        if f in full:
            out[f] = full[f]
    return out


def version_full(store: Store, v: dict) -> dict:
    return {"type": "file_version", "id": v["id"], "sha1": v["sha1"], "name": v["name"],
            "size": v["size"], "created_at": v["created_at"], "modified_at": v["created_at"],
            "modified_by": user_mini(store, v["created_by"]), "trashed_at": None, "purged_at": None}

"""Keeping exactly one V2 webhook of ours on each Download folder.

The decision (`plan`) is a pure function of what Box lists, what this install created
before (the state DB) and what the configuration wants, so that "restart ten times,
still one webhook" and "mapping removed, its webhook goes" are tested without Box.
Box allows one webhook per folder and app user, so an existing webhook on a wanted
folder is reused (updated when its address or triggers differ), never duplicated.
`apply` carries the plan out through the Box adapter."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable, Mapping

from cfbox_watch.errors import BoxError, NotFoundError

log = logging.getLogger("cfbox_watch.webhooks.registration")

# FILE.UPLOADED covers new files and new versions (and files moved into the folder);
# moves, renames, copies and restores can bring a file in or change its path; a folder
# moved or copied in brings its contents without a FILE.UPLOADED for each file.
TRIGGERS: tuple[str, ...] = (
    "FILE.UPLOADED", "FILE.COPIED", "FILE.MOVED", "FILE.RENAMED", "FILE.RESTORED",
    "FOLDER.COPIED", "FOLDER.MOVED", "FOLDER.RENAMED", "FOLDER.RESTORED",
)


@dataclass(frozen=True)
class Action:
    kind: str                    # "create" | "update" | "keep" | "delete" | "forget"
    folder_id: str
    webhook_id: str | None = None
    mapping: str | None = None


def plan(wanted: Mapping[str, str], address: str, triggers: Iterable[str], existing: Iterable,
         ours: Mapping[str, str]) -> list[Action]:
    """Actions that leave one webhook with `address` and `triggers` on each wanted folder.

    `wanted`: folder_id -> mapping name.  `existing`: RemoteWebhook-like objects Box
    listed (id, target_id, target_type, address, triggers).  `ours`: folder_id ->
    webhook_id this install registered earlier.  Webhooks on other folders are deleted
    only when they are ours (recorded, or pointing at our address)."""
    want_triggers = tuple(sorted(set(triggers)))
    on_folder: dict[str, object] = {}
    for w in existing:
        if w.target_type == "folder" and w.target_id is not None:
            on_folder.setdefault(w.target_id, w)
    our_ids = set(ours.values())
    actions: list[Action] = []
    for folder_id, mapping in sorted(wanted.items()):
        w = on_folder.get(folder_id)
        if w is None:
            actions.append(Action("create", folder_id, mapping=mapping))
        elif w.address == address and tuple(sorted(set(w.triggers))) == want_triggers:
            actions.append(Action("keep", folder_id, w.id, mapping))
        else:
            actions.append(Action("update", folder_id, w.id, mapping))
    listed_ids = set()
    for w in existing:
        listed_ids.add(w.id)
        target = w.target_id if w.target_type == "folder" else None
        if target in wanted:
            continue
        if w.id in our_ids or w.address == address:
            actions.append(Action("delete", target or "", w.id))
    for folder_id, webhook_id in sorted(ours.items()):
        if folder_id not in wanted and webhook_id not in listed_ids:
            actions.append(Action("forget", folder_id, webhook_id))
    return actions


def apply(remote, actions: list[Action], address: str, triggers: Iterable[str], record, forget) -> dict[str, str]:
    """Carry out `plan`'s actions; `record(folder_id, webhook_id, mapping)` and
    `forget(folder_id)` keep the state DB in step.  Returns webhook_id -> folder_id for
    every webhook now registered for a wanted folder.  Box errors propagate (the caller
    retries the whole sync), except a 409 on create (someone created one meanwhile:
    reuse it) and a 404 on delete (already gone)."""
    triggers = list(triggers)
    routes: dict[str, str] = {}
    for a in actions:
        if a.kind == "keep":
            record(a.folder_id, a.webhook_id, a.mapping)
            routes[a.webhook_id] = a.folder_id
        elif a.kind == "update":
            w = remote.update_webhook(a.webhook_id, address=address, triggers=triggers)
            log.info("webhook %s on Box folder %s now points at %s", w.id, a.folder_id, address,
                     extra={"fields": {"MAPPING": a.mapping, "ACTION": "webhook-updated"}})
            record(a.folder_id, w.id, a.mapping)
            routes[w.id] = a.folder_id
        elif a.kind == "create":
            try:
                w = remote.create_webhook(a.folder_id, address, triggers)
            except BoxError as e:
                if getattr(e, "status", None) != 409:
                    raise
                clash = [x for x in remote.list_webhooks()
                         if x.target_type == "folder" and x.target_id == a.folder_id]
                if not clash:
                    raise
                w = remote.update_webhook(clash[0].id, address=address, triggers=triggers)
            log.info("webhook %s registered on Box folder %s -> %s", w.id, a.folder_id, address,
                     extra={"fields": {"MAPPING": a.mapping, "ACTION": "webhook-created"}})
            record(a.folder_id, w.id, a.mapping)
            routes[w.id] = a.folder_id
        elif a.kind == "delete":
            try:
                remote.delete_webhook(a.webhook_id)
            except NotFoundError:
                pass
            log.info("webhook %s on Box folder %s removed (no mapping uses that folder now)", a.webhook_id,
                     a.folder_id or "?", extra={"fields": {"ACTION": "webhook-removed"}})
            if a.folder_id:
                forget(a.folder_id)
        elif a.kind == "forget":
            forget(a.folder_id)
    return routes

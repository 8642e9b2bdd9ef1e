"""Events and long-poll through the SDK: the service account sees what happens in the
folders shared with it (including the vendor's actions) and nothing else."""

from __future__ import annotations

import io
import threading
import time

import requests
from box_sdk_gen.managers.files import UpdateFileByIdParent
from box_sdk_gen.managers.folders import CreateFolderParent
from box_sdk_gen.managers.uploads import UploadFileAttributes, UploadFileAttributesParentField


def events_since(client, pos, limit=None):
    ev = client.events.get_events(stream_position=pos, limit=limit)
    return ev.entries, str(ev.next_stream_position)


def test_event_stream_shows_shared_folder_changes_only(emulator, box_client):
    client = box_client(emulator)
    now = client.events.get_events(stream_position="now")
    assert now.entries == [] and now.next_stream_position is not None
    pos = str(now.next_stream_position)

    private = emulator.control.vendor_mkdir("0", "Private")
    emulator.control.vendor_upload(private["id"], "hidden.jpg", b"h")
    returned = emulator.control.vendor_upload(emulator.folders["download"], "back.jpg", b"b")
    sub = client.folders.create_folder("Job1", CreateFolderParent(id=emulator.folders["upload"]))
    up = client.uploads.upload_file(
        UploadFileAttributes(name="a.jpg", parent=UploadFileAttributesParentField(id=sub.id)), io.BytesIO(b"a"))
    f = up.entries[0]
    client.files.update_file_by_id(f.id, parent=UpdateFileByIdParent(id=emulator.folders["archive"]))
    client.files.update_file_by_id(f.id, name="a-final.jpg")
    client.files.delete_file_by_id(f.id)
    emulator.control.vendor_trash(returned["id"])

    entries, nxt = events_since(client, pos)
    got = [(e.event_type.value if hasattr(e.event_type, "value") else e.event_type, e.source.id) for e in entries]
    assert got == [("ITEM_UPLOAD", returned["id"]), ("ITEM_CREATE", sub.id), ("ITEM_UPLOAD", f.id),
                   ("ITEM_MOVE", f.id), ("ITEM_RENAME", f.id), ("ITEM_TRASH", f.id), ("ITEM_TRASH", returned["id"])]
    assert entries[0].source.parent.id == emulator.folders["download"]
    assert entries[0].created_by.id != emulator.service_account["id"]  # the vendor did it
    again, nxt2 = events_since(client, nxt)
    assert again == [] and nxt2 == nxt

    # paging by limit walks the same events
    seen, p = [], pos
    for _ in range(10):
        chunk, p = events_since(client, p, limit=3)
        if not chunk:
            break
        seen += [e.event_id for e in chunk]
    assert seen == [e.event_id for e in entries]


def test_long_poll_new_change_and_reconnect(emulator, box_client):
    client = box_client(emulator)
    emulator.control.settings(longpoll_hold=1.0)
    pos = str(client.events.get_events(stream_position="now").next_stream_position)
    info = client.events.get_events_with_long_polling().entries[0]
    assert info.url.startswith(emulator.base_url) and int(info.retry_timeout) > 0 and info.max_retries

    t0 = time.monotonic()
    r = requests.get(info.url, params={"stream_position": pos}, timeout=10)
    assert r.json() == {"message": "reconnect"} and time.monotonic() - t0 >= 0.9

    emulator.control.settings(longpoll_hold=10.0)
    threading.Timer(0.3, emulator.control.vendor_upload,
                    args=(emulator.folders["download"], "new.jpg", b"n")).start()
    t0 = time.monotonic()
    r = requests.get(info.url, params={"stream_position": pos}, timeout=15)
    assert r.json() == {"message": "new_change"} and time.monotonic() - t0 < 5

    # a change the service account cannot see does not wake it
    pos = str(client.events.get_events(stream_position="now").next_stream_position)
    emulator.control.settings(longpoll_hold=1.0)
    private = emulator.control.vendor_mkdir("0", "Private")
    r = requests.get(info.url, params={"stream_position": pos}, timeout=10)
    assert r.json() == {"message": "reconnect"}
    assert private["id"]

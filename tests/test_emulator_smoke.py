"""The emulator driven by the real box_sdk_gen client over HTTP: the minimum every
other engineer relies on (token, /users/me, listing, upload, download)."""

from __future__ import annotations

import hashlib
import io

from box_sdk_gen import BaseUrls, BoxClient, BoxJWTAuth, JWTConfig
from box_sdk_gen.managers.uploads import UploadFileAttributes, UploadFileAttributesParentField


def sdk_client(emu) -> BoxClient:
    auth = BoxJWTAuth(config=JWTConfig.from_config_file(config_file_path=str(emu.config_path)))
    return BoxClient(auth=auth).with_custom_base_urls(BaseUrls(base_url=emu.base_url, upload_url=emu.upload_url))


def test_sdk_me_list_upload_download(emulator):
    client = sdk_client(emulator)
    me = client.users.get_user_me()
    assert me.id == emulator.service_account["id"]
    assert me.login.endswith("@boxdevedition.com")

    root = client.folders.get_folder_items("0")
    names = {e.name for e in root.entries}
    assert {"Upload", "Download", "Delivery", "Rejection", "Archive"} <= names

    data = b"hello box\n" * 1000
    sha1 = hashlib.sha1(data).hexdigest()
    up = client.uploads.upload_file(
        UploadFileAttributes(name="a.jpg", parent=UploadFileAttributesParentField(id=emulator.folders["upload"])),
        io.BytesIO(data), content_md_5=sha1)
    f = up.entries[0]
    assert f.name == "a.jpg" and f.size == len(data) and f.sha_1 == sha1
    assert f.parent.id == emulator.folders["upload"]

    listed = client.folders.get_folder_items(emulator.folders["upload"])
    assert [e.name for e in listed.entries] == ["a.jpg"]
    got = client.downloads.download_file(f.id).read()
    assert got == data
    assert emulator.control.file_content(f.id) == data
    counts = emulator.control.counters()
    assert counts["POST /api/2.0/files/content"] == 1
    assert counts["GET /2.0/files/{id}/content"] == 1
    assert counts["POST /oauth2/token"] == 1

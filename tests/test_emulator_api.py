"""The emulator against the real box_sdk_gen client (and raw HTTP where the SDK would
hide the answer behind its own retries): auth, names, conflicts, paging, downloads,
versions, visibility, faults, rate limits, restart."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import threading
import time
import uuid

import jwt
import pytest
import requests
from box_sdk_gen import BoxAPIError
from box_sdk_gen.managers.files import UpdateFileByIdParent
from box_sdk_gen.managers.folders import CreateFolderParent
from box_sdk_gen.managers.uploads import (PreflightFileUploadCheckParent, UploadFileAttributes,
                                          UploadFileAttributesParentField, UploadFileVersionAttributes)
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def upload(client, folder_id, name, data, md5=None):
    return client.uploads.upload_file(
        UploadFileAttributes(name=name, parent=UploadFileAttributesParentField(id=folder_id)),
        io.BytesIO(data), content_md_5=md5 or hashlib.sha1(data).hexdigest()).entries[0]


def token_of(client) -> str:
    # without network_session the SDK would fetch the token from api.box.com, not the emulator
    return client.auth.retrieve_token(network_session=client.network_session).access_token


def api_error(fn, *a, **kw) -> BoxAPIError:
    with pytest.raises(BoxAPIError) as ei:
        fn(*a, **kw)
    return ei.value


def assertion(cfg: dict, *, key=None, kid=None, jti=None, exp_in=30, aud="https://api.box.com/oauth2/token"):
    app = cfg["boxAppSettings"]
    if key is None:
        key = serialization.load_pem_private_key(app["appAuth"]["privateKey"].encode(),
                                                 app["appAuth"]["passphrase"].encode())
    claims = {"iss": app["clientID"], "sub": cfg["enterpriseID"], "box_sub_type": "enterprise", "aud": aud,
              "jti": jti or uuid.uuid4().hex, "exp": int(time.time()) + exp_in}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid or app["appAuth"]["publicKeyID"]})


def token_request(emu, cfg, **kw):
    app = cfg["boxAppSettings"]
    form = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "client_id": app["clientID"],
            "client_secret": kw.pop("secret", app["clientSecret"]), "assertion": assertion(cfg, **kw)}
    return requests.post(f"{emu.base_url}/oauth2/token", data=form, timeout=10)


# -- auth ----------------------------------------------------------------------
def test_jwt_grant_checks(emulator):
    cfg = json.loads(emulator.config_path.read_text())
    ok = token_request(emulator, cfg)
    assert ok.status_code == 200 and ok.json()["token_type"] == "bearer" and ok.json()["expires_in"] == 3600

    bad = token_request(emulator, cfg, secret="wrong")
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_client"

    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    bad = token_request(emulator, cfg, key=other_key)
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_grant"
    assert "Signature" in bad.json()["error_description"]

    bad = token_request(emulator, cfg, kid="nope")
    assert bad.json()["error"] == "invalid_grant" and "kid" in bad.json()["error_description"]

    bad = token_request(emulator, cfg, exp_in=120)
    assert bad.json()["error"] == "invalid_grant" and "exp" in bad.json()["error_description"]
    bad = token_request(emulator, cfg, exp_in=-5)
    assert bad.json()["error"] == "invalid_grant"
    bad = token_request(emulator, cfg, aud="https://example.com")
    assert bad.json()["error"] == "invalid_grant"

    jti = uuid.uuid4().hex
    assert token_request(emulator, cfg, jti=jti).status_code == 200
    again = token_request(emulator, cfg, jti=jti)
    assert again.status_code == 400 and "jti" in again.json()["error_description"]

    emulator.control.settings(app_authorized=False)
    bad = token_request(emulator, cfg)
    assert bad.json()["error"] == "unauthorized_client"


def test_sdk_rejected_with_wrong_secret_or_key(emulator, box_client, tmp_path):
    cfg = json.loads(emulator.config_path.read_text())
    cfg["boxAppSettings"]["clientSecret"] = "not-the-secret"
    bad = tmp_path / "bad-secret.json"
    bad.write_text(json.dumps(cfg))
    emu_bad = type("E", (), {"config_path": bad, "base_url": emulator.base_url, "upload_url": emulator.upload_url})
    err = api_error(box_client(emu_bad).users.get_user_me)
    assert err.response_info.status_code == 400 and err.response_info.body["error"] == "invalid_client"
    assert "not-the-secret" not in str(err.response_info.body)

    cfg = json.loads(emulator.config_path.read_text())
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cfg["boxAppSettings"]["appAuth"]["privateKey"] = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw")).decode()
    cfg["boxAppSettings"]["appAuth"]["passphrase"] = "pw"
    bad.write_text(json.dumps(cfg))
    err = api_error(box_client(emu_bad).users.get_user_me)
    assert err.response_info.body["error"] == "invalid_grant"


def test_bearer_required_and_expiry_refreshed_by_sdk(emulator, box_client):
    r = requests.get(f"{emulator.base_url}/2.0/users/me", timeout=10)
    assert r.status_code == 401 and "invalid_token" in r.headers["WWW-Authenticate"]
    r = requests.get(f"{emulator.base_url}/2.0/users/me", headers={"Authorization": "Bearer nope"}, timeout=10)
    assert r.status_code == 401
    client = box_client(emulator)
    client.users.get_user_me()
    old = token_of(client)
    emulator.control.expire_tokens()
    r = requests.get(f"{emulator.base_url}/2.0/users/me", headers={"Authorization": f"Bearer {old}"}, timeout=10)
    assert r.status_code == 401
    assert client.users.get_user_me().id == emulator.service_account["id"]  # SDK refreshed on 401
    counts = emulator.control.counters()
    assert counts["POST /oauth2/token"] == 2


def test_short_token_ttl(emulator_factory, box_client):
    emu = emulator_factory("--token-ttl", "1")
    client = box_client(emu)
    tok = client.auth.retrieve_token(network_session=client.network_session)
    assert tok.expires_in == 1
    h = {"Authorization": f"Bearer {tok.access_token}"}
    assert requests.get(f"{emu.base_url}/2.0/users/me", headers=h, timeout=10).status_code == 200
    time.sleep(1.1)
    assert requests.get(f"{emu.base_url}/2.0/users/me", headers=h, timeout=10).status_code == 401


# -- uploads, names, conflicts ---------------------------------------------------
def test_bad_content_md5_rejected(emulator, box_client):
    client = box_client(emulator)
    err = api_error(upload, client, emulator.folders["upload"], "x.bin", b"abc", md5="0" * 40)
    assert err.response_info.status_code == 400 and err.response_info.code == "bad_digest"
    assert emulator.control.item_count(emulator.folders["upload"]) == 0


@pytest.mark.parametrize("name", ["a/b", "a\\b", " lead", "trail ", ".", "..", "tab\tname", "x" * 256, ""])
def test_bad_names_rejected(emulator, box_client, name):
    client = box_client(emulator)
    err = api_error(client.folders.create_folder, name, CreateFolderParent(id=emulator.folders["upload"]))
    assert err.response_info.status_code == 400
    assert err.response_info.code in ("item_name_invalid", "item_name_too_long")
    if name:
        err = api_error(upload, client, emulator.folders["upload"], name, b"x")
        assert err.response_info.status_code == 400


def test_case_insensitive_conflicts_both_shapes(emulator, box_client):
    client = box_client(emulator)
    fid = emulator.folders["upload"]
    f = upload(client, fid, "Shot.JPG", b"one")
    err = api_error(upload, client, fid, "shot.jpg", b"two")
    assert err.response_info.status_code == 409 and err.response_info.code == "item_name_in_use"
    conflicts = err.response_info.context_info["conflicts"]
    assert isinstance(conflicts, list) and conflicts[0]["id"] == f.id
    assert conflicts[0]["sha1"] == hashlib.sha1(b"one").hexdigest() and conflicts[0]["etag"] == f.etag

    emulator.control.settings(conflicts_shape="object")
    err = api_error(upload, client, fid, "SHOT.jpg", b"two")
    assert err.response_info.context_info["conflicts"]["id"] == f.id

    err = api_error(client.folders.create_folder, "shot.jpg", CreateFolderParent(id=fid))
    assert err.response_info.status_code == 409  # files and folders share one namespace
    sub = client.folders.create_folder("Sub", CreateFolderParent(id=fid))
    err = api_error(client.folders.create_folder, "SUB", CreateFolderParent(id=fid))
    assert err.response_info.context_info["conflicts"][0]["id"] == sub.id


def test_metadata_after_file_contents(emulator, box_client):
    client = box_client(emulator)
    b = "BOUNDARY123"
    body = (f"--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n\r\nDATA\r\n"
            f"--{b}\r\nContent-Disposition: form-data; name=\"attributes\"\r\n\r\n"
            + json.dumps({"name": "f.txt", "parent": {"id": emulator.folders["upload"]}}) + f"\r\n--{b}--\r\n")
    r = requests.post(f"{emulator.upload_url}/2.0/files/content", data=body.encode(),
                      headers={"Authorization": f"Bearer {token_of(client)}",
                               "Content-Type": f"multipart/form-data; boundary={b}"}, timeout=10)
    assert r.status_code == 400 and r.json()["code"] == "metadata_after_file_contents"
    assert set(r.json()) >= {"type", "status", "code", "message", "context_info", "request_id"}


def test_upload_only_on_upload_host(emulator, box_client):
    client = box_client(emulator)
    r = requests.post(f"{emulator.base_url}/2.0/files/content", data=b"x",
                      headers={"Authorization": f"Bearer {token_of(client)}"}, timeout=10)
    assert r.status_code in (404, 405)


def test_preflight_and_size_limit(emulator, box_client):
    client = box_client(emulator)
    fid = emulator.folders["upload"]
    ok = client.uploads.preflight_file_upload_check(name="p.jpg", size=10, parent=PreflightFileUploadCheckParent(id=fid))
    assert ok.upload_url
    f = upload(client, fid, "p.jpg", b"data")
    err = api_error(client.uploads.preflight_file_upload_check, name="P.jpg", size=10,
                    parent=PreflightFileUploadCheckParent(id=fid))
    assert err.response_info.status_code == 409
    assert err.response_info.context_info["conflicts"][0]["id"] == f.id
    emulator.control.settings(file_size_limit=100)
    err = api_error(client.uploads.preflight_file_upload_check, name="big.jpg", size=101,
                    parent=PreflightFileUploadCheckParent(id=fid))
    assert err.response_info.status_code == 403 and err.response_info.code == "file_size_limit_exceeded"
    err = api_error(upload, client, fid, "big.jpg", b"x" * 2000)
    assert err.response_info.status_code == 403 and err.response_info.code == "file_size_limit_exceeded"


def test_name_temporarily_reserved_during_concurrent_upload(emulator, box_client):
    client = box_client(emulator)
    tok = token_of(client)
    fid = emulator.folders["upload"]
    b = "BNDRY"
    release = threading.Event()
    result = {}

    def slow_body():
        yield (f"--{b}\r\nContent-Disposition: form-data; name=\"attributes\"\r\n\r\n"
               + json.dumps({"name": "same.jpg", "parent": {"id": fid}})
               + f"\r\n--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"same.jpg\"\r\n\r\n").encode()
        yield b"first half "
        release.wait(10)
        yield f"second half\r\n--{b}--\r\n".encode()

    def first():
        result["r"] = requests.post(f"{emulator.upload_url}/2.0/files/content", data=slow_body(),
                                    headers={"Authorization": f"Bearer {tok}",
                                             "Content-Type": f"multipart/form-data; boundary={b}"}, timeout=20)

    emulator.control.reset_counters()
    t = threading.Thread(target=first)
    t.start()
    deadline = time.time() + 10
    while emulator.control.counters().get("POST /api/2.0/files/content", 0) < 1 and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # the first upload is now streaming its file part, its name reserved
    err = None
    try:
        upload(client, fid, "SAME.jpg", b"other")
    except BoxAPIError as e:
        err = e
    release.set()
    t.join(10)
    assert err is not None and err.response_info.status_code == 409
    assert err.response_info.code == "name_temporarily_reserved"
    assert result["r"].status_code == 201
    assert emulator.control.file_content(result["r"].json()["entries"][0]["id"]) == b"first half second half"


# -- listing -----------------------------------------------------------------------
def test_paging_offset_and_marker(emulator, box_client):
    client = box_client(emulator)
    fid = emulator.folders["upload"]
    for i in range(23):
        emulator.control.vendor_mkdir(fid, f"d{i:02d}")
    page = client.folders.get_folder_items(fid, offset=20, limit=10)
    assert page.total_count == 23 and len(page.entries) == 3
    seen = []
    offset = 0
    while True:
        p = client.folders.get_folder_items(fid, offset=offset, limit=10, fields=["name", "size", "modified_at"])
        seen += [e.name for e in p.entries]
        offset += 10
        if offset >= p.total_count:
            break
    assert sorted(seen) == [f"d{i:02d}" for i in range(23)]
    seen, marker = [], None
    for _ in range(10):
        p = client.folders.get_folder_items(fid, usemarker=True, marker=marker, limit=7)
        seen += [e.name for e in p.entries]
        marker = p.next_marker
        if not marker:
            break
    assert sorted(seen) == [f"d{i:02d}" for i in range(23)] and len(seen) == 23
    h = {"Authorization": f"Bearer {token_of(client)}"}
    r = requests.get(f"{emulator.base_url}/2.0/folders/{fid}/items?limit=5000", headers=h, timeout=10)
    assert r.status_code == 200 and r.json()["limit"] == 1000  # Box lowers it to the maximum
    r = requests.get(f"{emulator.base_url}/2.0/folders/{fid}/items?offset=10000", headers=h, timeout=10)
    assert r.status_code == 400 and "usemarker" in r.json()["message"]


def test_fields_selects_attributes(emulator, box_client):
    client = box_client(emulator)
    upload(client, emulator.folders["upload"], "a.txt", b"abc")
    r = requests.get(f"{emulator.base_url}/2.0/folders/{emulator.folders['upload']}/items?fields=name,sha1,size",
                     headers={"Authorization": f"Bearer {token_of(client)}"}, timeout=10)
    e = r.json()["entries"][0]
    assert set(e) == {"type", "id", "etag", "name", "sha1", "size"} and e["size"] == 3


def test_visibility_404_for_unshared_folders(emulator, box_client):
    client = box_client(emulator)
    private = emulator.control.vendor_mkdir("0", "Private")
    inside = emulator.control.vendor_upload(private["id"], "secret.txt", b"s")
    for fn, arg in ((client.folders.get_folder_by_id, private["id"]), (client.files.get_file_by_id, inside["id"]),
                    (client.folders.get_folder_items, private["id"])):
        err = api_error(fn, arg)
        assert err.response_info.status_code == 404
    names = {e.name for e in client.folders.get_folder_items("0").entries}
    assert "Private" not in names and "Upload" in names
    shared = client.folders.get_folder_items(emulator.folders["download"])
    assert shared.total_count == 0


# -- downloads, versions -------------------------------------------------------------
def test_download_range_version_and_202(emulator, box_client):
    client = box_client(emulator)
    data = bytes(range(256)) * 40
    f = upload(client, emulator.folders["upload"], "r.bin", data)
    assert client.downloads.download_file(f.id, range="bytes=10-19").read() == data[10:20]
    tok = token_of(client)
    r = requests.get(f"{emulator.base_url}/2.0/files/{f.id}/content", headers={"Authorization": f"Bearer {tok}"},
                     allow_redirects=False, timeout=10)
    assert r.status_code == 302 and r.headers["Location"].startswith(emulator.base_url)
    url = r.headers["Location"]
    r = requests.get(url, headers={"Range": "bytes=-5"}, timeout=10)
    assert r.status_code == 206 and r.content == data[-5:] and r.headers["Content-Range"].endswith(f"/{len(data)}")
    r = requests.get(url, headers={"Range": f"bytes={len(data)}-"}, timeout=10)
    assert r.status_code == 416

    emulator.control.settings(download_202=2)
    v2 = client.uploads.upload_file_version(f.id, UploadFileVersionAttributes(name="r.bin"), io.BytesIO(b"new"),
                                            content_md_5=hashlib.sha1(b"new").hexdigest()).entries[0]
    for _ in range(2):
        r = requests.get(f"{emulator.base_url}/2.0/files/{f.id}/content", headers={"Authorization": f"Bearer {tok}"},
                         allow_redirects=False, timeout=10)
        assert r.status_code == 202 and r.headers["Retry-After"] == "1"
    assert client.downloads.download_file(f.id).read() == b"new"
    old = client.downloads.download_file(f.id, version=f.file_version.id).read()
    assert old == data and v2.file_version.id != f.file_version.id


def test_new_version_if_match_and_versions_list(emulator, box_client):
    client = box_client(emulator)
    f = upload(client, emulator.folders["upload"], "v.txt", b"v1")
    v2 = client.uploads.upload_file_version(f.id, UploadFileVersionAttributes(name="v.txt"), io.BytesIO(b"v2"),
                                            if_match=f.etag, content_md_5=hashlib.sha1(b"v2").hexdigest()).entries[0]
    assert v2.etag != f.etag and v2.sha_1 == hashlib.sha1(b"v2").hexdigest()
    err = api_error(client.uploads.upload_file_version, f.id, UploadFileVersionAttributes(name="v.txt"),
                    io.BytesIO(b"v3"), if_match=f.etag)
    assert err.response_info.status_code == 412
    versions = client.file_versions.get_file_versions(f.id)
    assert versions.total_count == 1 and versions.entries[0].sha_1 == hashlib.sha1(b"v1").hexdigest()
    assert emulator.control.tree(emulator.folders["upload"])["children"][0]["version_count"] == 2


def test_move_rename_trash(emulator, box_client):
    client = box_client(emulator)
    f = upload(client, emulator.folders["download"], "m.txt", b"m")
    moved = client.files.update_file_by_id(f.id, parent=UpdateFileByIdParent(id=emulator.folders["archive"]),
                                           name="m2.txt")
    assert moved.parent.id == emulator.folders["archive"] and moved.name == "m2.txt"
    assert emulator.control.find(emulator.folders["archive"], "m2.txt")["id"] == f.id
    assert emulator.control.find(emulator.folders["download"], "m.txt") is None
    client.files.delete_file_by_id(f.id)
    assert api_error(client.files.get_file_by_id, f.id).response_info.status_code == 404
    upload(client, emulator.folders["archive"], "m2.txt", b"again")  # the name is free once trashed


# -- faults and limits ----------------------------------------------------------------
def test_429_retry_after_from_rate_limit_and_fault(emulator, box_client):
    client = box_client(emulator)
    tok = token_of(client)
    h = {"Authorization": f"Bearer {tok}"}
    emulator.control.rate_limits(api_per_minute=3)
    codes = [requests.get(f"{emulator.base_url}/2.0/users/me", headers=h, timeout=10) for _ in range(4)]
    assert [r.status_code for r in codes] == [200, 200, 200, 429]
    assert codes[-1].json()["code"] == "rate_limit_exceeded" and int(codes[-1].headers["Retry-After"]) >= 1
    emulator.control.rate_limits()
    emulator.control.faults(rate_429=1.0, retry_after=7, path_regex="/users/me")
    r = requests.get(f"{emulator.base_url}/2.0/users/me", headers=h, timeout=10)
    assert r.status_code == 429 and r.headers["Retry-After"] == "7"
    emulator.control.faults(error_503=1.0, path_regex="/users/me")
    assert requests.get(f"{emulator.base_url}/2.0/users/me", headers=h, timeout=10).status_code == 503
    emulator.control.faults(error_500=1.0, path_regex="/users/me")
    assert requests.get(f"{emulator.base_url}/2.0/users/me", headers=h, timeout=10).status_code == 500
    emulator.control.clear_faults()
    assert requests.get(f"{emulator.base_url}/2.0/users/me", headers=h, timeout=10).status_code == 200


def test_sdk_retries_through_transient_429(emulator, box_client):
    client = box_client(emulator)
    client.users.get_user_me()
    emulator.control.reset_counters()
    emulator.control.faults(rate_429=1.0, retry_after=1, path_regex="^/2.0/folders/")
    threading.Timer(1.5, emulator.control.clear_faults).start()
    t0 = time.monotonic()
    assert client.folders.get_folder_by_id(emulator.folders["upload"]).name == "Upload"
    assert time.monotonic() - t0 >= 1.0  # the SDK waited Retry-After between attempts
    assert emulator.control.counters()["GET /2.0/folders/{id}"] >= 2


def test_corrupt_and_reset_downloads(emulator, box_client):
    client = box_client(emulator)
    data = b"payload" * 5000
    f = upload(client, emulator.folders["upload"], "c.bin", data)
    emulator.control.faults(corrupt_download=1.0, path_regex="^/_dl/")
    got = client.downloads.download_file(f.id).read()
    assert len(got) == len(data) and hashlib.sha1(got).hexdigest() != f.sha_1
    emulator.control.faults(reset=1.0, path_regex="^/_dl/")
    tok = token_of(client)
    url = requests.get(f"{emulator.base_url}/2.0/files/{f.id}/content", headers={"Authorization": f"Bearer {tok}"},
                       allow_redirects=False, timeout=10).headers["Location"]
    with pytest.raises(requests.exceptions.RequestException):
        r = requests.get(url, timeout=10)
        r.raise_for_status()
        assert len(r.content) == len(data)
    emulator.control.clear_faults()
    assert client.downloads.download_file(f.id).read() == data


def test_latency_and_bandwidth(emulator, box_client):
    client = box_client(emulator)
    data = b"z" * 200_000
    f = upload(client, emulator.folders["upload"], "slow.bin", data)
    emulator.control.faults(bandwidth=400_000, latency=0.2, path_regex="^/_dl/")
    t0 = time.monotonic()
    assert client.downloads.download_file(f.id).read() == data
    assert time.monotonic() - t0 >= 0.6


def test_restart_keeps_everything(emulator, box_client):
    client = box_client(emulator)
    f = upload(client, emulator.folders["upload"], "keep.txt", b"kept")
    port = emulator.port
    emulator.stop()
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"{emulator.base_url}/_emulator/info", timeout=2)
    emulator.start()
    assert emulator.port == port
    assert client.files.get_file_by_id(f.id).sha_1 == hashlib.sha1(b"kept").hexdigest()  # token survived too
    assert client.downloads.download_file(f.id).read() == b"kept"
    assert emulator.control.counters().get("POST /oauth2/token") is None


def test_reset_mid_upload_body_creates_nothing(emulator, box_client):
    client = box_client(emulator)
    tok = token_of(client)
    emulator.control.faults(reset=1.0, path_regex="^/api/2.0/files/content")
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.post(f"{emulator.upload_url}/2.0/files/content", headers={"Authorization": f"Bearer {tok}"},
                      files=[("attributes", (None, json.dumps({"name": "r.bin", "parent": {"id": emulator.folders["upload"]}}))),
                             ("file", ("r.bin", b"r" * 300_000))], timeout=10)
    emulator.control.clear_faults()
    assert emulator.control.item_count(emulator.folders["upload"]) == 0
    assert upload(client, emulator.folders["upload"], "r.bin", b"ok").name == "r.bin"


def test_cli_limits_and_hold(emulator_factory, box_client):
    emu = emulator_factory("--file-size-limit", "10", "--longpoll-hold", "0.5")
    client = box_client(emu)
    err = api_error(upload, client, emu.folders["upload"], "big.bin", b"x" * 11)
    assert err.response_info.code == "file_size_limit_exceeded"
    assert emu.control.info()["settings"]["longpoll_hold"] == 0.5


def test_emulator_bad_data_dir_is_a_clear_error(tmp_path):
    import subprocess
    import sys

    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = subprocess.run([sys.executable, "-m", "cfbox_watch", "emulator", "--port", "0", "--data", str(blocker / "sub")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "Traceback" not in r.stderr and "--data" in r.stderr


def test_concurrent_uploads_and_duplicates(emulator, box_client):
    """Many clients at once: every distinct name lands once; of racing duplicates exactly one wins."""
    from concurrent.futures import ThreadPoolExecutor

    fid = emulator.folders["upload"]
    clients = [box_client(emulator) for _ in range(4)]
    for c in clients:
        c.users.get_user_me()

    def put(i):
        return upload(clients[i % 4], fid, f"f{i:03d}.bin", b"%d" % i * 500).id

    with ThreadPoolExecutor(8) as ex:
        ids = list(ex.map(put, range(60)))
    assert len(set(ids)) == 60 and emulator.control.item_count(fid) == 60

    def dup(i):
        try:
            return upload(clients[i % 4], fid, "DUP.bin", b"d" * 100_000).id
        except BoxAPIError as e:
            return e.response_info.code

    with ThreadPoolExecutor(8) as ex:
        outcomes = list(ex.map(dup, range(8)))
    winners = [o for o in outcomes if o not in ("item_name_in_use", "name_temporarily_reserved")]
    assert len(winners) == 1, outcomes
    assert emulator.control.item_count(fid) == 61


def test_direct_upload_size_cap(emulator, box_client):
    client = box_client(emulator)
    emulator.control.settings(direct_upload_max=1000)
    err = api_error(upload, client, emulator.folders["upload"], "big.bin", b"x" * 5000)
    assert err.response_info.status_code == 413 and "chunked" in err.response_info.body["message"]
    f = upload(client, emulator.folders["upload"], "ok.bin", b"x" * 1000)
    err = api_error(client.uploads.upload_file_version, f.id, UploadFileVersionAttributes(name="ok.bin"),
                    io.BytesIO(b"y" * 5000))
    assert err.response_info.status_code == 413


def test_reset_after_handling_leaves_the_upload_done(emulator, box_client):
    client = box_client(emulator)
    tok = token_of(client)
    emulator.control.faults(reset_after=1.0, path_regex="^/api/2.0/files/content")
    with pytest.raises(requests.exceptions.RequestException):
        r = requests.post(f"{emulator.upload_url}/2.0/files/content", headers={"Authorization": f"Bearer {tok}"},
                          files=[("attributes", (None, json.dumps({"name": "done.bin", "parent": {"id": emulator.folders["upload"]}}))),
                                 ("file", ("done.bin", b"d" * 1000))], timeout=10)
        r.json()
    emulator.control.clear_faults()
    assert emulator.control.find(emulator.folders["upload"], "done.bin")["size"] == 1000

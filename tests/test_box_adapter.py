"""BoxRemote against the local Box emulator, with the real box_sdk_gen client over
HTTP; plus the pure error-classification rules without any Box."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from cfbox_watch.box_adapter import (
    BoxEvent,
    BoxRemote,
    Failure,
    RemoteItem,
    UploadedPart,
    classify,
    event_from_json,
    first_conflict,
    item_from_json,
    parse_retry_after,
)
from cfbox_watch.config_model import Connection
from cfbox_watch.errors import (
    ItemError,
    NameConflictError,
    NotFoundError,
    PreconditionFailedError,
    RetryableError,
    SessionExpiredError,
    SetupError,
)
from cfbox_watch.ratelimit import RateLimiter


# --------------------------------------------------------------------------- helpers

def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def connection(emu, config_path: Path | None = None, **kw) -> Connection:
    return Connection(name="emu", jwt_config=Path(config_path or emu.config_path),
                      base_url=emu.base_url, upload_url=emu.upload_url, **kw)


def remote_for(emu, **kw) -> BoxRemote:
    return BoxRemote.from_connection(connection(emu), **kw)


def secrets_of(config_path: Path) -> list[str]:
    cfg = json.loads(Path(config_path).read_text())
    app = cfg["boxAppSettings"]
    key_lines = [ln for ln in app["appAuth"]["privateKey"].splitlines() if ln and "-----" not in ln]
    return [app["clientSecret"], app["appAuth"]["passphrase"], *key_lines[:3]]


def assert_no_secrets(texts, secrets):
    for text in texts:
        for s in secrets:
            assert s not in text, "a secret leaked into a message or log line"


def upload(remote, folder_id, name, data):
    return remote.upload_file(folder_id, name, io.BytesIO(data), size=len(data), sha1=sha1(data))


# --------------------------------------------------------------------------- pure rules

@pytest.mark.parametrize(
    "failure, kind",
    [
        (Failure(status=0, message="ConnectionError"), RetryableError),
        (Failure(status=429, code="rate_limit_exceeded", retry_after=7), RetryableError),
        (Failure(status=500), RetryableError),
        (Failure(status=503), RetryableError),
        (Failure(status=202, retry_after=3), RetryableError),
        (Failure(status=401), SetupError),
        (Failure(status=403, code="access_denied_insufficient_permissions"), SetupError),
        (Failure(status=403, code="file_size_limit_exceeded"), ItemError),
        (Failure(status=404), NotFoundError),
        (Failure(status=404, root_label="post_production[0].upload_folder_id"), SetupError),
        (Failure(status=409, code="item_name_in_use"), NameConflictError),
        (Failure(status=409, code="name_temporarily_reserved"), RetryableError),
        (Failure(status=409, code="range_overlaps_existing_part"), ItemError),
        (Failure(status=412, code="precondition_failed"), PreconditionFailedError),
        (Failure(status=410, code="session_expired"), SessionExpiredError),
        (Failure(status=400, code="item_name_invalid"), ItemError),
        (Failure(status=400, code="bad_digest"), RetryableError),
        (Failure(status=400, code="invalid_grant", token_request=True), SetupError),
    ],
)
def test_classify_kinds(failure, kind):
    err = classify(failure)
    assert type(err) is kind
    assert err.status == (failure.status or None)


def test_classify_keeps_retry_after_and_code():
    err = classify(Failure(status=429, code="rate_limit_exceeded", retry_after=7, request_id="r1"))
    assert err.retry_after == 7 and err.code == "rate_limit_exceeded" and err.request_id == "r1"
    assert "7 s" in str(err)


@pytest.mark.parametrize(
    "code, description, words",
    [
        ("unauthorized_client", "This app is not authorized by the enterprise admin", "Platform Apps Manager"),
        ("invalid_client", "The client credentials are invalid", "client secret"),
        ("invalid_grant", "Current date time must be before the expiration date time listed in the 'exp' claim.",
         "clock"),
        ("invalid_grant", "\"kid\" invalid, unable to lookup correct key", "public key"),
        ("invalid_grant", "Please check the 'sub' claim.", "enterpriseID"),
        ("invalid_grant", "something else", "key pair"),
    ],
)
def test_oauth_errors_give_admin_advice(code, description, words):
    err = classify(Failure(status=400, code=code, message=description, token_request=True,
                           client_id="abc123", config_path="/etc/cfbox/acme.json"))
    assert isinstance(err, SetupError)
    assert err.code == code
    assert words in str(err)


def test_root_404_names_the_mapping_and_the_login():
    err = classify(Failure(status=404, code="not_found", root_label="delivery[1].folder_id", root_id="77",
                           service_login="AutomationUser_1_x@boxdevedition.com"))
    assert "folder 77 " in str(err)
    assert isinstance(err, SetupError)
    assert "delivery[1].folder_id" in str(err)
    assert "AutomationUser_1_x@boxdevedition.com" in str(err)
    assert "Share" in str(err)


@pytest.mark.parametrize(
    "context_info",
    [
        {"conflicts": [{"type": "file", "id": "12", "sha1": "ab", "etag": "3"}]},
        {"conflicts": {"type": "file", "id": "12", "sha1": "ab", "etag": "3"}},
    ],
)
def test_conflict_shapes(context_info):
    assert first_conflict(context_info)["id"] == "12"
    err = classify(Failure(status=409, code="item_name_in_use", context_info=context_info))
    assert isinstance(err, NameConflictError)
    assert (err.conflict_id, err.conflict_type, err.conflict_sha1, err.conflict_etag) == ("12", "file", "ab", "3")


@pytest.mark.parametrize("context_info", [None, {}, {"conflicts": []}, {"conflicts": "x"}, "junk"])
def test_conflict_without_details(context_info):
    assert first_conflict(context_info) == {}
    err = classify(Failure(status=409, code="item_name_in_use", context_info=context_info))
    assert isinstance(err, NameConflictError) and err.conflict_id is None


def test_parse_retry_after():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 2.5 ") == 2.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
    assert parse_retry_after("soon") is None
    now = 1_800_000_000.0
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now + 30))
    assert parse_retry_after(date, now=now) == pytest.approx(30, abs=1)


def test_item_and_event_from_json():
    item = item_from_json({"type": "file", "id": 5, "name": "a.jpg", "size": 3, "sha1": "ff", "etag": 2,
                           "parent": {"type": "folder", "id": "9"}, "file_version": {"id": "77"}})
    assert item == RemoteItem(id="5", type="file", name="a.jpg", parent_id="9", size=3, sha1="ff",
                              etag="2", version_id="77")
    ev = event_from_json({"event_id": "e1", "event_type": "ITEM_UPLOAD", "created_at": "t",
                          "source": {"type": "file", "id": "5", "name": "a.jpg"}})
    assert ev == BoxEvent("e1", "ITEM_UPLOAD", RemoteItem(id="5", type="file", name="a.jpg"), "t")
    assert event_from_json({"event_id": "e2", "event_type": "COLLAB", "source": {"type": "user"}}).item is None


# --------------------------------------------------------------------------- against the emulator

def test_whoami_get_and_calls_counter(emulator):
    remote = remote_for(emulator)
    me = remote.whoami()
    assert me["id"] == emulator.service_account["id"]
    assert me["login"].endswith("@boxdevedition.com")
    folder = remote.get_folder(emulator.folders["upload"])
    assert folder.type == "folder" and folder.name == "Upload" and folder.id == emulator.folders["upload"]
    counts = emulator.control.counters()
    # one sign-in, one /users/me, one folder
    assert remote.calls() == counts["total"] == 3
    with pytest.raises(NotFoundError):
        remote.get_file("987654321")


def test_list_folder_follows_markers(emulator):
    remote = remote_for(emulator)
    parent = remote.create_folder(emulator.folders["upload"], "many")
    names = {f"f{i:02d}" for i in range(7)}
    for n in names:
        remote.create_folder(parent.id, n)
    upload(remote, parent.id, "x.jpg", b"data")
    emulator.control.reset_counters()
    remote.page_size = 3
    items = list(remote.list_folder(parent.id))
    assert {i.name for i in items} == names | {"x.jpg"}
    assert len(items) == 8
    assert emulator.control.counters()["GET /2.0/folders/{id}/items"] == 3
    f = next(i for i in items if i.name == "x.jpg")
    assert f.type == "file" and f.sha1 == sha1(b"data") and f.size == 4 and f.etag is not None
    assert f.version_id and f.parent_id == parent.id and f.modified_at
    remote.page_size = 1000
    assert len(list(remote.list_folder(parent.id))) == 8


def test_create_folder_twice_returns_the_existing_one(emulator):
    remote = remote_for(emulator)
    up = emulator.folders["upload"]
    a = remote.create_folder(up, "Shoot 1")
    b = remote.create_folder(up, "shoot 1")     # Box names ignore case
    assert a.id == b.id and a.type == "folder"
    upload(remote, up, "taken.jpg", b"x")
    with pytest.raises(NameConflictError) as info:
        remote.create_folder(up, "taken.jpg")   # a file holds the name
    assert info.value.conflict_type == "file"


def test_upload_checks_sha1_and_reports_bad_digest(emulator):
    remote = remote_for(emulator)
    up = emulator.folders["upload"]
    data = os.urandom(5000)
    item = remote.upload_file(up, "IMG_1.jpg", io.BytesIO(data), size=len(data), sha1=sha1(data),
                              content_modified_at="2026-01-02T03:04:05Z")
    assert item.sha1 == sha1(data) and item.size == len(data) and item.parent_id == up
    assert item.content_modified_at.startswith("2026-01-02T03:04:05")
    assert emulator.control.file_content(item.id) == data
    with pytest.raises(RetryableError) as info:
        remote.upload_file(up, "IMG_2.jpg", io.BytesIO(data), size=len(data), sha1=sha1(b"other"))
    assert info.value.code == "bad_digest"
    with pytest.raises(ValueError, match="seekable"):
        remote.upload_file(up, "IMG_3.jpg", NonSeekable(data), size=len(data), sha1=sha1(data))


class NonSeekable(io.RawIOBase):
    def __init__(self, data):
        self._b = io.BytesIO(data)

    def readable(self):
        return True

    def seekable(self):
        return False

    def readinto(self, b):
        return self._b.readinto(b)


def test_sha1_mismatch_in_answer_is_retryable(emulator):
    remote = remote_for(emulator)

    class Answer:
        raw_data = {"entries": [{"type": "file", "id": "1", "name": "a", "sha1": "00" * 20}]}

    with pytest.raises(RetryableError, match="corrupted in transit"):
        remote._verified(Answer(), "11" * 20, "upload of 'a'")


@pytest.mark.parametrize("shape", ["list", "object"])
def test_upload_conflict_both_shapes(emulator, shape):
    emulator.control.settings(conflicts_shape=shape)
    remote = remote_for(emulator)
    up = emulator.folders["upload"]
    first = upload(remote, up, "same.jpg", b"one")
    with pytest.raises(NameConflictError) as info:
        upload(remote, up, "SAME.jpg", b"two")
    err = info.value
    assert err.conflict_id == first.id
    assert err.conflict_sha1 == sha1(b"one")
    assert err.conflict_etag == first.etag
    assert err.status == 409 and err.code == "item_name_in_use"


def test_preflight(emulator):
    remote = remote_for(emulator)
    up = emulator.folders["upload"]
    remote.preflight(up, "free.jpg", 10)
    upload(remote, up, "busy.jpg", b"1")
    with pytest.raises(NameConflictError):
        remote.preflight(up, "busy.jpg", 10)


def test_upload_version_with_if_match(emulator):
    remote = remote_for(emulator)
    up = emulator.folders["upload"]
    v1 = upload(remote, up, "doc.tif", b"v1")
    v2data = b"version two"
    v2 = remote.upload_version(v1.id, io.BytesIO(v2data), size=len(v2data), sha1=sha1(v2data), if_match=v1.etag)
    assert v2.id == v1.id and v2.sha1 == sha1(v2data) and v2.etag != v1.etag
    assert v2.version_id != v1.version_id and v2.name == "doc.tif"
    with pytest.raises(PreconditionFailedError):
        remote.upload_version(v1.id, io.BytesIO(b"v3"), size=2, sha1=sha1(b"v3"), if_match=v1.etag)
    renamed = remote.upload_version(v1.id, io.BytesIO(b"v3"), size=2, sha1=sha1(b"v3"), name="doc-final.tif")
    assert renamed.name == "doc-final.tif"
    assert emulator.control.file_content(v1.id) == b"v3"


def _chunked_emulator(emulator, part=1024):
    emulator.control.settings(part_size=part, chunk_min=1)


def test_chunked_session_parts_list_commit(emulator):
    _chunked_emulator(emulator)
    remote = remote_for(emulator)
    up = emulator.folders["upload"]
    data = os.urandom(1024 * 4 + 100)
    session = remote.create_upload_session(up, "big.psd", len(data))
    assert session.part_size == 1024 and session.total_parts == 5 and session.id
    offsets = list(range(0, len(data), session.part_size))
    # parts out of order and from several threads, as the uploader does
    results: dict[int, UploadedPart] = {}

    def send(off):
        results[off] = remote.upload_part(session.id, data[off:off + session.part_size], off, len(data))

    threads = [threading.Thread(target=send, args=(o,)) for o in reversed(offsets)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == offsets
    assert results[0].sha1 == sha1(data[:1024]) and results[0].size == 1024
    listed = remote.list_parts(session.id)
    assert [p.offset for p in listed] == offsets
    assert {p.part_id for p in listed} == {p.part_id for p in results.values()}
    item = remote.commit_session(session.id, listed, sha1=sha1(data), parent_id=up)
    assert item.name == "big.psd" and item.sha1 == sha1(data) and item.size == len(data)
    assert emulator.control.file_content(item.id) == data
    # parts are immutable: the same part again is harmless, other bytes are refused
    s2 = remote.create_upload_session(up, "big2.psd", len(data))
    first = remote.upload_part(s2.id, data[:1024], 0, len(data))
    assert remote.upload_part(s2.id, data[:1024], 0, len(data)).sha1 == first.sha1
    with pytest.raises(ItemError) as info:
        remote.upload_part(s2.id, bytes(1024), 0, len(data))
    assert info.value.code == "range_overlaps_existing_part"
    remote.abort_session(s2.id)
    remote.abort_session(s2.id)          # already gone: fine
    with pytest.raises((NotFoundError, SessionExpiredError)):
        remote.list_parts(s2.id)


def test_commit_202_is_retryable_with_retry_after(emulator):
    _chunked_emulator(emulator)
    emulator.control.settings(commit_202=1)
    remote = remote_for(emulator)
    up = emulator.folders["upload"]
    data = os.urandom(2500)
    s = remote.create_upload_session(up, "later.psd", len(data))
    parts = [remote.upload_part(s.id, data[o:o + 1024], o, len(data)) for o in range(0, len(data), 1024)]
    emulator.control.reset_counters()
    with pytest.raises(RetryableError) as info:
        remote.commit_session(s.id, parts, sha1=sha1(data))
    assert info.value.retry_after is not None and info.value.retry_after >= 0
    assert emulator.control.counters()["POST /api/2.0/files/upload_sessions/{id}/commit"] == 1  # SDK did not retry
    item = remote.commit_session(s.id, parts, sha1=sha1(data), content_modified_at="2025-05-05T05:05:05Z")
    assert item.sha1 == sha1(data)


def test_version_session(emulator):
    _chunked_emulator(emulator)
    remote = remote_for(emulator)
    up = emulator.folders["upload"]
    v1 = upload(remote, up, "v.psd", b"first")
    data = os.urandom(3000)
    s = remote.create_version_session(v1.id, len(data))
    parts = [remote.upload_part(s.id, data[o:o + 1024], o, len(data)) for o in range(0, len(data), 1024)]
    item = remote.commit_session(s.id, parts, sha1=sha1(data), if_match=v1.etag)
    assert item.id == v1.id and item.sha1 == sha1(data)
    # a commit against an etag that is no longer current is refused
    s2 = remote.create_version_session(v1.id, len(data), name="v-renamed.psd")
    parts = [remote.upload_part(s2.id, data[o:o + 1024], o, len(data)) for o in range(0, len(data), 1024)]
    with pytest.raises(PreconditionFailedError):
        remote.commit_session(s2.id, parts, sha1=sha1(data), if_match=v1.etag, name="v-renamed.psd")
    item = remote.commit_session(s2.id, parts, sha1=sha1(data), if_match=item.etag, name="v-renamed.psd")
    assert item.name == "v-renamed.psd"


def test_expired_session_is_session_expired(emulator):
    _chunked_emulator(emulator)
    remote = remote_for(emulator)
    data = os.urandom(2048)
    s = remote.create_upload_session(emulator.folders["upload"], "old.psd", len(data))
    emulator.control.expire_sessions()
    with pytest.raises(SessionExpiredError):
        remote.upload_part(s.id, data[:1024], 0, len(data))


def test_download_chunks_and_202(emulator):
    remote = remote_for(emulator)
    down = emulator.folders["download"]
    data = os.urandom(300_000)
    f = emulator.control.vendor_upload(down, "ret.jpg", data)
    chunks = list(remote.download(f["id"], chunk_size=64 * 1024))
    assert b"".join(chunks) == data
    assert len(chunks) >= 5 and all(len(c) <= 64 * 1024 for c in chunks)
    emulator.control.settings(download_202=1)
    g = emulator.control.vendor_upload(down, "fresh.jpg", b"new")
    emulator.control.reset_counters()
    with pytest.raises(RetryableError) as info:
        list(remote.download(g["id"]))
    assert info.value.retry_after is not None
    assert emulator.control.counters()["GET /2.0/files/{id}/content"] == 1
    assert b"".join(remote.download(g["id"])) == b"new"
    with pytest.raises(NotFoundError):
        list(remote.download("555555555"))


def test_download_of_an_old_version(emulator):
    remote = remote_for(emulator)
    up = emulator.folders["upload"]
    v1 = upload(remote, up, "h.jpg", b"old bytes")
    remote.upload_version(v1.id, io.BytesIO(b"new bytes"), size=9, sha1=sha1(b"new bytes"))
    assert b"".join(remote.download(v1.id, version_id=v1.version_id)) == b"old bytes"
    assert b"".join(remote.download(v1.id)) == b"new bytes"


def test_move_and_trash(emulator):
    remote = remote_for(emulator)
    down, archive = emulator.folders["download"], emulator.folders["archive"]
    f = emulator.control.vendor_upload(down, "m.jpg", b"m")
    moved = remote.move_file(f["id"], archive)
    assert moved.parent_id == archive and moved.name == "m.jpg"
    renamed = remote.move_file(f["id"], archive, name="m-2.jpg")
    assert renamed.name == "m-2.jpg"
    remote.trash_file(f["id"])
    assert [i for i in remote.list_folder(archive) if i.id == f["id"]] == []
    with pytest.raises(NotFoundError):
        remote.trash_file("424242424")


def test_events_and_long_poll(emulator):
    emulator.control.settings(longpoll_hold=1)
    remote = remote_for(emulator)
    down = emulator.folders["download"]
    pos = remote.event_stream_now()
    events, same = remote.get_events(pos)
    assert events == []
    url, retry_timeout = remote.long_poll_info()
    assert url.startswith("http") and retry_timeout > 0
    assert remote.long_poll(url, pos, 1) == "reconnect"       # nothing happened during the hold
    f = emulator.control.vendor_upload(down, "ev.jpg", b"e")
    assert remote.long_poll(url, pos, 1) == "new_change"
    events, nxt = remote.get_events(pos, limit=10_000)        # clamped to Box's 500
    uploads = [e for e in events if e.event_type == "ITEM_UPLOAD"]
    assert uploads and uploads[0].item.id == f["id"] and uploads[0].item.parent_id == down
    assert nxt != pos
    events, _ = remote.get_events(nxt)
    assert events == []


def test_long_poll_timeout_and_unreachable(emulator):
    emulator.control.settings(longpoll_hold=10)
    remote = remote_for(emulator)
    url, _ = remote.long_poll_info()
    remote.long_poll_margin = 0.0
    started = time.monotonic()
    assert remote.long_poll(url, remote.event_stream_now(), 0.5) == "timeout"
    assert time.monotonic() - started < 5
    with pytest.raises(RetryableError):
        remote.long_poll(f"http://127.0.0.1:{free_port()}/subscribe", "0", 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_429_is_not_retried_by_the_sdk_and_pauses_the_connection(emulator):
    remote = remote_for(emulator)
    remote.whoami()
    emulator.control.faults(rate_429=1.0, retry_after=2, path_regex=r"^/2\.0/folders/")
    emulator.control.reset_counters()
    with pytest.raises(RetryableError) as info:
        remote.get_folder(emulator.folders["upload"])
    assert info.value.retry_after == 2
    assert info.value.status == 429
    assert emulator.control.counters()["GET /2.0/folders/{id}"] == 1
    # the whole connection waits out the Retry-After instead of hammering
    assert 1.0 < remote.limiter.paused_for() <= 2.0
    emulator.control.clear_faults()
    started = time.monotonic()
    remote.whoami()
    assert time.monotonic() - started >= 1.0


def test_5xx_and_network_errors_are_retryable_and_not_retried(emulator):
    remote = remote_for(emulator)
    remote.whoami()
    emulator.control.faults(error_500=1.0, path_regex=r"^/2\.0/folders/")
    emulator.control.reset_counters()
    with pytest.raises(RetryableError) as info:
        remote.get_folder(emulator.folders["upload"])
    assert info.value.status == 500
    assert emulator.control.counters()["GET /2.0/folders/{id}"] == 1
    emulator.control.clear_faults()
    dead = Connection(name="dead", jwt_config=emulator.config_path,
                      base_url=f"http://127.0.0.1:{free_port()}", upload_url=f"http://127.0.0.1:{free_port()}/api",
                      connect_timeout=2.0)
    with pytest.raises(RetryableError, match="could not be reached"):
        BoxRemote.from_connection(dead).whoami()


def test_token_expiry_is_refreshed_transparently(emulator):
    remote = remote_for(emulator)
    remote.whoami()
    emulator.control.expire_tokens()
    emulator.control.reset_counters()
    assert remote.get_folder(emulator.folders["upload"]).name == "Upload"
    counts = emulator.control.counters()
    assert counts["POST /oauth2/token"] == 1
    assert counts["GET /2.0/folders/{id}"] == 2   # the 401, then the retry
    assert remote.token_refreshes() == 1


def test_concurrent_401s_share_one_refresh(emulator):
    remote = remote_for(emulator)
    remote.whoami()
    emulator.control.expire_tokens()
    emulator.control.reset_counters()
    errors = []
    barrier = threading.Barrier(8)

    def work():
        barrier.wait()
        try:
            remote.get_folder(emulator.folders["upload"])
        except Exception as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert emulator.control.counters()["POST /oauth2/token"] <= 2


def test_workers_starting_together_sign_in_once(emulator):
    remote = remote_for(emulator)
    barrier = threading.Barrier(6)

    def work():
        barrier.wait()
        remote.get_folder(emulator.folders["upload"])

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert emulator.control.counters()["POST /oauth2/token"] == 1


def _config_copy(emulator, tmp_path, **changes) -> Path:
    cfg = json.loads(emulator.config_path.read_text())
    for dotted, value in changes.items():
        node = cfg
        keys = dotted.split("__")
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
    path = tmp_path / "changed-config.json"
    path.write_text(json.dumps(cfg))
    path.chmod(0o600)
    return path


def test_wrong_client_secret_is_setup_error_without_secrets(emulator, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    path = _config_copy(emulator, tmp_path, boxAppSettings__clientSecret="wrong-secret-0123456789")
    remote = BoxRemote.from_connection(connection(emulator, path))
    with pytest.raises(SetupError) as info:
        remote.whoami()
    err = info.value
    assert err.code == "invalid_client"
    assert "client secret" in str(err) and "Developer Console" in str(err)
    secrets = secrets_of(path) + secrets_of(emulator.config_path)
    assert_no_secrets([str(err), repr(err), caplog.text], secrets)


def test_app_not_authorized_is_setup_error(emulator):
    emulator.control.settings(app_authorized=False)
    remote = remote_for(emulator)
    with pytest.raises(SetupError) as info:
        remote.get_folder(emulator.folders["upload"])
    assert info.value.code == "unauthorized_client"
    assert "Admin Console" in str(info.value)


def test_folder_not_shared_is_setup_error_naming_the_login(emulator):
    remote = remote_for(emulator, root_folders={"876543210": "post_production[0].upload_folder_id"})
    with pytest.raises(SetupError) as info:
        list(remote.list_folder("876543210"))
    msg = str(info.value)
    assert "post_production[0].upload_folder_id" in msg and "876543210" in msg
    assert emulator.service_account["login"] in msg
    # the same 404 on an ordinary item is only about that item
    with pytest.raises(NotFoundError):
        remote.get_folder("876543211")


def test_bad_passphrase_and_bad_key_are_setup_errors(emulator, tmp_path):
    path = _config_copy(emulator, tmp_path, boxAppSettings__appAuth__passphrase="not-the-passphrase")
    with pytest.raises(SetupError) as info:
        BoxRemote.from_connection(connection(emulator, path))
    assert "passphrase" in str(info.value)
    assert_no_secrets([str(info.value)], secrets_of(emulator.config_path))
    path = _config_copy(emulator, tmp_path, boxAppSettings__appAuth__privateKey="-----BEGIN garbage-----")
    with pytest.raises(SetupError) as info:
        BoxRemote.from_connection(connection(emulator, path))
    assert "privateKey" in str(info.value)


def test_credential_reference(emulator, tmp_path, monkeypatch):
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "acme.json").write_bytes(emulator.config_path.read_bytes())
    (creds / "acme.json").chmod(0o600)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    remote = BoxRemote.from_connection(connection(emulator, Path("credential:acme.json")))
    assert remote.whoami()["login"] == emulator.service_account["login"]
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(SetupError, match="CREDENTIALS_DIRECTORY"):
        BoxRemote.from_connection(connection(emulator, Path("credential:acme.json")))


def test_no_secrets_or_tokens_in_any_message_or_log(emulator, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    remote = remote_for(emulator)
    remote.whoami()
    token = remote._auth.token_storage.get().access_token
    messages = []
    for action in (
        lambda: remote.get_file("1"),
        lambda: remote.create_folder("1", "x"),
        lambda: upload(remote, emulator.folders["upload"], "bad/name.jpg", b"x"),
        lambda: remote.upload_version("1", io.BytesIO(b"x"), size=1, sha1=sha1(b"x")),
    ):
        with pytest.raises(Exception) as info:
            action()
        messages += [str(info.value), repr(info.value)]
    emulator.control.expire_tokens()
    emulator.control.settings(app_authorized=False)
    with pytest.raises(SetupError) as info:
        remote.whoami()
    messages.append(str(info.value))
    assert_no_secrets(messages + [caplog.text], secrets_of(emulator.config_path) + [token])


def test_rate_limiter_is_applied_to_every_call(emulator):
    slept = []
    clock_now = [0.0]

    def clock():
        return clock_now[0]

    def sleep(s):
        slept.append(s)
        clock_now[0] += s

    limiter = RateLimiter(60, 60, clock=clock, sleep=sleep)    # bursts of 6, then 1/s
    remote = BoxRemote.from_connection(connection(emulator), limiter=limiter)
    for _ in range(9):
        remote.get_folder(emulator.folders["upload"])
    assert len(slept) == 3 and sum(slept) == pytest.approx(3.0)
    assert limiter.total_waited() == pytest.approx(3.0)


def test_upload_budget_is_separate_from_calls(emulator):
    clock_now = [0.0]
    slept = []

    def sleep(s):
        slept.append(s)
        clock_now[0] += s

    limiter = RateLimiter(6000, 6, clock=lambda: clock_now[0], sleep=sleep)  # 1 upload per 10 s
    remote = BoxRemote.from_connection(connection(emulator), limiter=limiter)
    for i in range(3):
        remote.get_folder(emulator.folders["upload"])
        upload(remote, emulator.folders["upload"], f"u{i}.jpg", b"u")
    assert sum(slept) == pytest.approx(20.0)          # the 2nd and 3rd upload waited


def test_one_remote_shared_by_many_threads(emulator):
    remote = remote_for(emulator)
    up = emulator.folders["upload"]
    errors, items = [], []
    lock = threading.Lock()

    def work(n):
        try:
            for i in range(4):
                data = f"{n}-{i}".encode() * 100
                item = upload(remote, up, f"t{n}-{i}.jpg", data)
                with lock:
                    items.append(item)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len({i.id for i in items}) == 24
    assert len(list(remote.list_folder(up))) == 24
    assert remote.calls() == emulator.control.counters()["total"]


def test_connection_reset_mid_download_is_retryable(emulator):
    remote = remote_for(emulator)
    f = emulator.control.vendor_upload(emulator.folders["download"], "cut.jpg", os.urandom(400_000))
    emulator.control.faults(reset=1.0, path_regex=r"^/_dl/")
    with pytest.raises(RetryableError, match="mid-download"):
        b"".join(remote.download(f["id"], chunk_size=8192))
    emulator.control.clear_faults()
    assert len(b"".join(remote.download(f["id"]))) == 400_000


def test_connection_reset_during_upload_is_retryable_and_sent_once(emulator):
    remote = remote_for(emulator)
    remote.whoami()
    emulator.control.faults(reset=1.0, path_regex=r"^/api/2\.0/files/content")
    emulator.control.reset_counters()
    with pytest.raises(RetryableError):
        upload(remote, emulator.folders["upload"], "cut.jpg", os.urandom(200_000))
    assert emulator.control.counters().get("POST /api/2.0/files/content", 0) == 1


def test_item_problems_are_item_errors(emulator):
    remote = remote_for(emulator)
    up = emulator.folders["upload"]
    with pytest.raises(ItemError) as info:
        upload(remote, up, "bad/name.jpg", b"x")
    assert info.value.code == "item_name_invalid" and not isinstance(info.value, RetryableError)
    emulator.control.settings(file_size_limit=10)
    with pytest.raises(ItemError) as info:
        upload(remote, up, "huge.tif", b"x" * 100)
    assert info.value.code == "file_size_limit_exceeded" and info.value.status == 403
    with pytest.raises(ItemError) as info:
        remote.preflight(up, "huge.tif", 100)
    assert not isinstance(info.value, SetupError)


def test_read_timeout_from_the_connection_applies(emulator):
    remote = BoxRemote.from_connection(connection(emulator, read_timeout=0.5))
    remote.whoami()
    emulator.control.faults(latency=3.0, path_regex=r"^/2\.0/folders/")
    started = time.monotonic()
    with pytest.raises(RetryableError, match="did not answer in time"):
        remote.get_folder(emulator.folders["upload"])
    assert time.monotonic() - started < 2.5


def test_scrub_removes_secrets_and_the_live_token(emulator):
    remote = remote_for(emulator)
    remote.whoami()
    token = remote._auth.token_storage.get().access_token
    secrets = secrets_of(emulator.config_path)
    text = " | ".join(secrets + [token, "harmless"])
    scrubbed = remote._scrub(text)
    assert "harmless" in scrubbed
    assert_no_secrets([scrubbed], secrets + [token])

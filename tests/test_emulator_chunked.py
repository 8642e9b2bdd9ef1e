"""Chunked upload sessions through the SDK's session calls, with small parts."""

from __future__ import annotations

import base64
import hashlib
import io
import os

import pytest
import requests
from box_sdk_gen import BoxAPIError
from box_sdk_gen.schemas.upload_part import UploadPart

PART = 1024


def sha_b64(data: bytes) -> str:
    return "sha=" + base64.b64encode(hashlib.sha1(data).digest()).decode()


@pytest.fixture
def small_parts(emulator_factory):
    return emulator_factory("--part-size", str(PART), "--chunk-min", "2000")


def send_parts(client, session, data, order=None):
    parts = {}
    offsets = list(range(0, len(data), session.part_size))
    for off in order(offsets) if order else offsets:
        chunk = data[off:off + session.part_size]
        up = client.chunked_uploads.upload_file_part(
            session.id, io.BytesIO(chunk), sha_b64(chunk), f"bytes {off}-{off + len(chunk) - 1}/{len(data)}")
        parts[off] = up.part
    return [parts[o] for o in sorted(parts)]


def test_chunked_upload_new_file_out_of_order(small_parts, box_client):
    emu = small_parts
    client = box_client(emu)
    data = os.urandom(PART * 4 + 100)
    s = client.chunked_uploads.create_file_upload_session(emu.folders["upload"], len(data), "big.tif")
    assert s.part_size == PART and s.total_parts == 5 and s.session_endpoints.upload_part
    parts = send_parts(client, s, data, order=lambda offs: list(reversed(offs)))
    listed = client.chunked_uploads.get_file_upload_session_parts(s.id)
    assert sorted(p.offset for p in listed.entries) == [p.offset for p in parts]
    files = client.chunked_uploads.create_file_upload_session_commit(
        s.id, [UploadPart(part_id=p.part_id, offset=p.offset, size=p.size, sha_1=p.sha_1) for p in parts],
        sha_b64(data))
    f = files.entries[0]
    assert f.sha_1 == hashlib.sha1(data).hexdigest() and f.size == len(data)
    assert emu.control.file_content(f.id) == data


def test_part_rules(small_parts, box_client):
    emu = small_parts
    client = box_client(emu)
    data = os.urandom(PART * 3)
    s = client.chunked_uploads.create_file_upload_session(emu.folders["upload"], len(data), "p.bin")
    first = data[:PART]
    client.chunked_uploads.upload_file_part(s.id, io.BytesIO(first), sha_b64(first), f"bytes 0-{PART - 1}/{len(data)}")
    other = os.urandom(PART)
    with pytest.raises(BoxAPIError) as ei:
        client.chunked_uploads.upload_file_part(s.id, io.BytesIO(other), sha_b64(other), f"bytes 0-{PART - 1}/{len(data)}")
    assert ei.value.response_info.status_code == 409
    assert ei.value.response_info.code == "range_overlaps_existing_part"
    again = client.chunked_uploads.upload_file_part(s.id, io.BytesIO(first), sha_b64(first),
                                                    f"bytes 0-{PART - 1}/{len(data)}")
    assert again.part.sha_1 == hashlib.sha1(first).hexdigest()  # identical bytes: the stored part
    emu.control.settings(strict_parts=True)
    with pytest.raises(BoxAPIError) as ei:
        client.chunked_uploads.upload_file_part(s.id, io.BytesIO(first), sha_b64(first), f"bytes 0-{PART - 1}/{len(data)}")
    assert ei.value.response_info.code == "range_overlaps_existing_part"
    with pytest.raises(BoxAPIError) as ei:  # not aligned to part_size
        client.chunked_uploads.upload_file_part(s.id, io.BytesIO(other), sha_b64(other), f"bytes 10-{PART + 9}/{len(data)}")
    assert ei.value.response_info.status_code == 416
    with pytest.raises(BoxAPIError) as ei:  # digest of something else
        client.chunked_uploads.upload_file_part(s.id, io.BytesIO(data[PART:2 * PART]), sha_b64(b"x"),
                                                f"bytes {PART}-{2 * PART - 1}/{len(data)}")
    assert ei.value.response_info.status_code == 412
    with pytest.raises(BoxAPIError) as ei:  # below the chunked minimum
        client.chunked_uploads.create_file_upload_session(emu.folders["upload"], 1000, "small.bin")
    assert ei.value.response_info.code == "file_size_too_small"


def test_commit_checks_digest_202_then_abort_and_expiry(small_parts, box_client):
    emu = small_parts
    client = box_client(emu)
    data = os.urandom(PART * 2 + 7)
    s = client.chunked_uploads.create_file_upload_session(emu.folders["upload"], len(data), "c.bin")
    parts = send_parts(client, s, data)
    body = [UploadPart(part_id=p.part_id, offset=p.offset, size=p.size, sha_1=p.sha_1) for p in parts]
    with pytest.raises(BoxAPIError) as ei:
        client.chunked_uploads.create_file_upload_session_commit(s.id, body, sha_b64(b"wrong"))
    assert ei.value.response_info.status_code == 412

    emu.control.settings(commit_202=1)
    tok = client.auth.retrieve_token(network_session=client.network_session).access_token
    r = requests.post(f"{emu.upload_url}/2.0/files/upload_sessions/{s.id}/commit",
                      json={"parts": [{"part_id": p.part_id, "offset": p.offset, "size": p.size, "sha1": p.sha_1}
                                      for p in parts]},
                      headers={"Authorization": f"Bearer {tok}", "Digest": sha_b64(data)}, timeout=10)
    assert r.status_code == 202 and r.headers["Retry-After"] == "1"
    f = client.chunked_uploads.create_file_upload_session_commit(s.id, body, sha_b64(data)).entries[0]
    assert emu.control.file_content(f.id) == data

    s2 = client.chunked_uploads.create_file_upload_session(emu.folders["upload"], len(data), "d.bin")
    client.chunked_uploads.delete_file_upload_session_by_id(s2.id)
    with pytest.raises(BoxAPIError) as ei:
        client.chunked_uploads.get_file_upload_session_parts(s2.id)
    assert ei.value.response_info.status_code == 404

    s3 = client.chunked_uploads.create_file_upload_session(emu.folders["upload"], len(data), "e.bin")
    emu.control.expire_sessions()
    with pytest.raises(BoxAPIError) as ei:
        client.chunked_uploads.get_file_upload_session_parts(s3.id)
    assert ei.value.response_info.status_code == 410


def test_version_session_and_sdk_upload_big_file(small_parts, box_client):
    emu = small_parts
    client = box_client(emu)
    data = os.urandom(PART * 3 + 1)
    f = client.chunked_uploads.upload_big_file(io.BytesIO(data), "whole.bin", len(data), emu.folders["upload"])
    assert f.sha_1 == hashlib.sha1(data).hexdigest()
    new = os.urandom(PART * 2)
    s = client.chunked_uploads.create_file_upload_session_for_existing_file(f.id, len(new))
    parts = send_parts(client, s, new)
    got = client.chunked_uploads.create_file_upload_session_commit(
        s.id, [UploadPart(part_id=p.part_id, offset=p.offset, size=p.size, sha_1=p.sha_1) for p in parts],
        sha_b64(new), if_match=f.etag).entries[0]
    assert got.id == f.id and got.sha_1 == hashlib.sha1(new).hexdigest()
    assert emu.control.tree(emu.folders["upload"])["children"][0]["version_count"] == 2


def test_session_survives_restart(small_parts, box_client):
    emu = small_parts
    client = box_client(emu)
    data = os.urandom(PART * 2 + 5)
    s = client.chunked_uploads.create_file_upload_session(emu.folders["upload"], len(data), "r.bin")
    first = data[:PART]
    client.chunked_uploads.upload_file_part(s.id, io.BytesIO(first), sha_b64(first), f"bytes 0-{PART - 1}/{len(data)}")
    emu.stop()
    emu.start()
    assert [p.offset for p in client.chunked_uploads.get_file_upload_session_parts(s.id).entries] == [0]

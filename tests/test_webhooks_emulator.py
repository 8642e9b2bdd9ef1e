"""The emulator's webhooks: CRUD rules as Box documents them, and deliveries that
box_sdk_gen's own `validate_message` accepts, sent to a real HTTP listener."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from cfbox_watch.box_adapter import BoxRemote
from cfbox_watch.config_model import Connection
from cfbox_watch.errors import BoxError, NotFoundError


class Sink:
    """A listener recording every POST; answers `statuses` in turn, then 200."""

    def __init__(self, statuses=()):
        self.got: list[tuple[dict, bytes]] = []
        self.statuses = list(statuses)
        sink = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                sink.got.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = sink.statuses.pop(0) if sink.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    def wait(self, n: int, timeout: float = 10.0) -> list[tuple[dict, bytes]]:
        deadline = time.monotonic() + timeout
        while len(self.got) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(self.got) >= n, f"{len(self.got)} deliveries, expected {n}"
        return self.got

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sink():
    s = Sink()
    yield s
    s.close()


def remote_for(emu) -> BoxRemote:
    return BoxRemote.from_connection(Connection(name="emu", jwt_config=emu.config_path, base_url=emu.base_url,
                                                upload_url=emu.upload_url))


def keys(emu) -> tuple[str, str]:
    w = json.loads(emu.config_path.read_text())["webhooks"]
    return w["primaryKey"], w["secondaryKey"]


def sdk_valid(headers, body, primary, secondary=None) -> bool:
    from box_sdk_gen.managers.webhooks import WebhooksManager

    return WebhooksManager.validate_message(body.decode(), headers, primary, secondary_key=secondary)


def test_delivery_is_signed_like_box_and_cascades_to_subfolders(emulator, sink):
    emu = emulator
    remote = remote_for(emu)
    down = emu.folders["download"]
    w = remote.create_webhook(down, sink.url, ["FILE.UPLOADED", "FILE.RENAMED"])
    sub = emu.control.vendor_mkdir(down, "Sub")              # FOLDER.CREATED: not subscribed
    f = emu.control.vendor_upload(sub["id"], "a.jpg", b"a")   # cascades from the Download folder
    emu.control.vendor_rename(f["id"], "b.jpg")
    emu.control.vendor_upload(emu.folders["upload"], "elsewhere.jpg", b"x")   # other folder: nothing
    got = sink.wait(2)
    time.sleep(0.3)
    assert len(got) == 2
    primary, secondary = keys(emu)
    bodies = []
    for headers, body in got:
        assert sdk_valid(headers, body, primary, secondary)
        assert sdk_valid(headers, body, "not-the-key", secondary)    # the secondary alone verifies
        assert headers["box-signature-version"] == "1" and headers["box-signature-algorithm"] == "HmacSHA256"
        bodies.append(json.loads(body))
    assert [b["trigger"] for b in bodies] == ["FILE.UPLOADED", "FILE.RENAMED"]
    assert all(b["webhook"]["id"] == w.id and b["source"]["id"] == f["id"] for b in bodies)
    assert bodies[0]["source"]["parent"]["id"] == sub["id"]
    assert bodies[1]["source"]["name"] == "b.jpg"
    assert len({b["id"] for b in bodies}) == 2


@pytest.mark.parametrize("sign_with,primary_ok,secondary_ok", [
    ("primary", True, False), ("secondary", False, True), ("wrong", False, False), ("none", False, False)])
def test_sign_with_control(emulator, sink, sign_with, primary_ok, secondary_ok):
    emu = emulator
    remote_for(emu).create_webhook(emu.folders["download"], sink.url, ["FILE.UPLOADED"])
    emu.control.webhook_settings(sign_with=sign_with)
    emu.control.vendor_upload(emu.folders["download"], "a.jpg", b"a")
    [(headers, body)] = sink.wait(1)
    primary, secondary = keys(emu)
    assert sdk_valid(headers, body, primary) is primary_ok
    assert sdk_valid(headers, body, "x", secondary) is secondary_ok


def test_failed_deliveries_are_retried_with_the_same_body_and_new_delivery_ids(emulator):
    emu = emulator
    sink = Sink(statuses=[500, 503])
    try:
        remote_for(emu).create_webhook(emu.folders["download"], sink.url, ["FILE.UPLOADED"])
        emu.control.webhook_settings(retry_delays=[0.1, 0.1, 0.1])
        emu.control.vendor_upload(emu.folders["download"], "a.jpg", b"a")
        got = sink.wait(3)
        time.sleep(0.4)
        assert len(got) == 3                       # the third answered 200: no more retries
        assert len({json.loads(b)["id"] for _, b in got}) == 1
        assert len({h["box-delivery-id"] for h, _ in got}) == 3
        log = emu.control.webhook_deliveries()
        assert [(d["attempt"], d["status"]) for d in log] == [(0, 500), (1, 503), (2, 200)]
    finally:
        sink.close()


def test_retries_stop_after_the_schedule_and_when_the_webhook_is_deleted(emulator):
    emu = emulator
    sink = Sink(statuses=[500] * 100)
    try:
        remote = remote_for(emu)
        w = remote.create_webhook(emu.folders["download"], sink.url, ["FILE.UPLOADED"])
        emu.control.webhook_settings(retry_delays=[0.1, 0.1])
        emu.control.vendor_upload(emu.folders["download"], "a.jpg", b"a")
        sink.wait(3)
        time.sleep(0.5)
        assert len(sink.got) == 3                  # first attempt + 2 retries
        emu.control.webhook_settings(retry_delays=[1.0])
        emu.control.vendor_upload(emu.folders["download"], "b.jpg", b"b")
        sink.wait(4)
        remote.delete_webhook(w.id)
        time.sleep(1.5)
        assert len(sink.got) == 4                  # the pending retry was not sent
    finally:
        sink.close()


def test_crud_rules(emulator, box_client):
    emu = emulator
    remote = remote_for(emu)
    down = emu.folders["download"]

    def refused(fn, status):
        with pytest.raises(BoxError) as e:
            fn()
        assert e.value.status == status, e.value
        return e.value

    refused(lambda: remote.create_webhook("0", "https://example.com/h", ["FILE.UPLOADED"]), 400)
    refused(lambda: remote.create_webhook(down, "http://example.com/h", ["FILE.UPLOADED"]), 400)
    with pytest.raises(NotFoundError):
        remote.create_webhook("999999", "https://example.com/h", ["FILE.UPLOADED"])
    w = remote.create_webhook(down, "https://example.com/h", ["FILE.UPLOADED"])
    refused(lambda: remote.create_webhook(down, "https://example.com/other", ["FILE.MOVED"]), 409)
    assert [x.id for x in remote.list_webhooks()] == [w.id]
    u = remote.update_webhook(w.id, triggers=["FILE.UPLOADED", "FILE.MOVED"])
    assert u.address == "https://example.com/h" and u.triggers == ("FILE.UPLOADED", "FILE.MOVED")
    # unknown triggers are refused (raw call: the SDK's enum would stop it first)
    client = box_client(emu)
    tok = client.auth.retrieve_token(network_session=client.network_session).access_token
    r = requests.put(f"{emu.base_url}/2.0/webhooks/{w.id}", json={"triggers": ["FILE.EXPLODED"]},
                     headers={"Authorization": f"Bearer {tok}"}, timeout=10)
    assert r.status_code == 400 and "FILE.EXPLODED" in r.json()["message"]
    remote.delete_webhook(w.id)
    with pytest.raises(NotFoundError):
        remote.delete_webhook(w.id)
    assert remote.list_webhooks() == []


def test_list_pages_with_markers(emulator):
    emu = emulator
    remote = remote_for(emu)
    ids = set()
    for key in ("upload", "download", "delivery", "rejection", "archive"):
        ids.add(remote.create_webhook(emu.folders[key], "https://example.com/h", ["FILE.UPLOADED"]).id)
    headers = {"Authorization": f"Bearer {_token(emu)}"}
    seen, marker = [], None
    while True:
        page = requests.get(f"{emu.base_url}/2.0/webhooks", params={"limit": 2, "marker": marker}, timeout=10,
                            headers=headers).json()
        assert len(page["entries"]) <= 2
        seen += [w["id"] for w in page["entries"]]
        marker = page["next_marker"]
        if not marker:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == 5
    assert {w.id for w in remote.list_webhooks()} == ids


def _token(emu) -> str:
    from box_sdk_gen import BaseUrls, BoxClient, BoxJWTAuth, JWTConfig

    auth = BoxJWTAuth(config=JWTConfig.from_config_file(config_file_path=str(emu.config_path)))
    client = BoxClient(auth=auth).with_custom_base_urls(BaseUrls(base_url=emu.base_url, upload_url=emu.upload_url))
    return client.auth.retrieve_token(network_session=client.network_session).access_token

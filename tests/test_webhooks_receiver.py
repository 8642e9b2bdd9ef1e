"""The webhook receiver over real HTTP: deliveries crafted and signed by the emulator
with the app's real keys (or not), a real state DB for replay protection.

Every refusal must be a 4xx, hand nothing to the incoming side, and log one line that
names the reason without a key, a signature or the body."""

from __future__ import annotations

import json
import logging
import socket
import time

import pytest

from cfbox_watch.webhooks.receiver import WebhookReceiver
from cfbox_watch.webhooks.signature import format_timestamp

BODY_MARK = "BODY-CONTENT-MUST-NOT-BE-LOGGED"


@pytest.fixture
def setup(emulator, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="cfbox_watch.webhooks")
    cfg = json.loads(emulator.config_path.read_text())
    keys = {"primary": cfg["webhooks"]["primaryKey"], "secondary": cfg["webhooks"]["secondaryKey"]}
    notices = []
    current = {"keys": (keys["primary"], keys["secondary"])}
    rec = WebhookReceiver("127.0.0.1", 0, label="test", keys=lambda: current["keys"],
                          db_path=tmp_path / "state.sqlite3", on_notice=lambda n: notices.append(n) or True)
    rec.start()
    host, port = rec.address
    try:
        yield emulator, f"http://{host}:{port}/hook", notices, current, keys, caplog, rec
    finally:
        rec.stop()


def body(n: str, parent="42") -> dict:
    return {"type": "webhook_event", "id": n, "created_at": format_timestamp(time.time()),
            "trigger": "FILE.UPLOADED", "webhook": {"id": "777", "type": "webhook"},
            "source": {"type": "file", "id": "9001", "name": BODY_MARK, "parent": {"type": "folder", "id": parent}}}


def no_secrets_logged(caplog, keys, sent: list[dict]) -> None:
    text = caplog.text
    for k in keys.values():
        assert k not in text
    assert BODY_MARK not in text
    for answer in sent:
        for name, value in answer["headers"].items():
            if name.upper().startswith("BOX-SIGNATURE-") and len(value) > 20:
                assert value not in text


def test_valid_delivery_is_handed_over_once(setup):
    emu, url, notices, _, keys, caplog, _ = setup
    a = emu.control.webhook_send(url, body("n-1"))
    assert a["status"] == 200
    assert [(n.body_id, n.trigger, n.source_id, n.parent_id, n.webhook_id) for n in notices] == [
        ("n-1", "FILE.UPLOADED", "9001", "42", "777")]
    # replay: the same notification (Box keeps the body id across retries, with a new delivery id)
    b = emu.control.webhook_send(url, body("n-1"))
    assert b["status"] == 409 and len(notices) == 1
    assert "refused (replay)" in caplog.text
    no_secrets_logged(caplog, keys, [a, b])


@pytest.mark.parametrize("kind,status,reason", [
    ("bad_signature", 403, "bad_signature"),
    ("unsigned", 403, "unsigned"),
    ("stale", 403, "stale"),
    ("future", 403, "future"),
    ("version", 400, "bad_version"),
    ("algorithm", 400, "bad_algorithm"),
    ("invalid_json", 400, "malformed"),
    ("no_id", 400, "malformed"),
    ("huge", 413, "too_large"),
    ("tampered", 403, "bad_signature"),
])
def test_refusals(setup, kind, status, reason):
    emu, url, notices, _, keys, caplog, rec = setup
    kw: dict = {}
    payload: object = body(f"r-{kind}")
    if kind == "bad_signature":
        kw["sign_with"] = "wrong"
    elif kind == "unsigned":
        kw["sign_with"] = "none"
    elif kind == "stale":
        kw["age"] = 11 * 60
    elif kind == "future":
        kw["timestamp"] = format_timestamp(time.time() + 300)
    elif kind == "version":
        kw["headers"] = {"BOX-SIGNATURE-VERSION": "2"}
    elif kind == "algorithm":
        kw["headers"] = {"BOX-SIGNATURE-ALGORITHM": "HmacSHA1"}
    elif kind == "invalid_json":
        payload = '{"type": "webhook_event", "id": ' + BODY_MARK
    elif kind == "no_id":
        payload = {"type": "webhook_event", "source": {"name": BODY_MARK}}
    elif kind == "huge":
        payload = {"id": "big", "pad": "x" * (rec.max_body + 1)}
    elif kind == "tampered":
        good = emu.control.webhook_send(url, body("r-tampered-orig"))
        assert good["status"] == 200
        notices.clear()
        # same signature headers, different body
        kw["headers"] = {k: v for k, v in good["headers"].items() if k.upper().startswith("BOX-")}
    answer = emu.control.webhook_send(url, payload, **kw)
    assert answer["status"] == status, answer
    assert notices == []
    assert f"refused ({reason})" in caplog.text
    assert rec.counts.get(reason) == 1
    no_secrets_logged(caplog, keys, [answer])


def test_wrong_key_and_rotation(setup):
    emu, url, notices, current, keys, caplog, _ = setup
    # this install knows only the primary key; a delivery signed only with the secondary fails
    current["keys"] = (keys["primary"], None)
    a = emu.control.webhook_send(url, body("k-1"), sign_with="secondary")
    assert a["status"] == 403 and not notices
    # rotation: the primary was reset at Box (ours is now stale); the secondary still verifies
    current["keys"] = ("primary-key-before-the-reset-000", keys["secondary"])
    b = emu.control.webhook_send(url, body("k-2"))
    assert b["status"] == 200 and [n.body_id for n in notices] == ["k-2"]
    assert "(secondary key)" in caplog.text
    # only the secondary key configured at all
    current["keys"] = (None, keys["secondary"])
    c = emu.control.webhook_send(url, body("k-3"), sign_with="secondary")
    assert c["status"] == 200 and [n.body_id for n in notices] == ["k-2", "k-3"]
    no_secrets_logged(caplog, keys, [a, b, c])


def test_replay_protection_survives_a_restart(emulator, tmp_path):
    cfg = json.loads(emulator.config_path.read_text())
    keys = (cfg["webhooks"]["primaryKey"], cfg["webhooks"]["secondaryKey"])
    seen = []
    statuses = []
    for _ in range(2):
        rec = WebhookReceiver("127.0.0.1", 0, label="t", keys=lambda: keys, db_path=tmp_path / "s.sqlite3",
                              on_notice=lambda n: seen.append(n.body_id) or True)
        rec.start()
        try:
            host, port = rec.address
            statuses.append(emulator.control.webhook_send(f"http://{host}:{port}/", body("same"))["status"])
        finally:
            rec.stop()
    assert statuses == [200, 409] and seen == ["same"]


def raw_request(addr, data: bytes) -> bytes:
    with socket.create_connection(addr, timeout=5) as s:
        s.sendall(data)
        out = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            out += chunk
            if b"\r\n\r\n" in out and b"Connection: close" in out:
                break
        return out


def test_no_length_and_identity(setup):
    emu, url, notices, _, _, caplog, rec = setup
    answer = raw_request(rec.address, b"POST /hook HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                                      b"5\r\nhello\r\n0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 411")
    answer = raw_request(rec.address, b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413")
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as r:   # what `check` looks for
        assert json.loads(r.read()) == {"service": "cfbox-watch webhooks"}
    assert notices == []


def test_ipv6_listen_address(tmp_path):
    import urllib.request

    try:
        rec = WebhookReceiver("::1", 0, label="v6", keys=lambda: ("a", "b"), db_path=tmp_path / "s.sqlite3",
                              on_notice=lambda n: True)
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    rec.start()
    try:
        with urllib.request.urlopen(f"http://[::1]:{rec.address[1]}/", timeout=5) as r:
            assert json.loads(r.read()) == {"service": "cfbox-watch webhooks"}
    finally:
        rec.stop()

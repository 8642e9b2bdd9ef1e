"""Box V2 webhooks in the emulator: the `/2.0/webhooks` CRUD endpoints and signed
deliveries to registered addresses on loopback, with retries.

A change to an item (the hook in `items.emit`) fires every webhook whose target folder
is the item's parent or an ancestor (Box cascades folder webhooks to subfolders) and
whose triggers include the change.  Deliveries run on one background thread so that
the API call that caused them answers at once, as on Box.  Each delivery is signed
like Box's: `base64(HMAC-SHA256(key, body + BOX-DELIVERY-TIMESTAMP))` with the app's
primaryKey and secondaryKey from the config.json the emulator wrote; every retry gets
a new BOX-DELIVERY-ID and timestamp and keeps the body (and its `id`).

Test controls (see `control.py`): which key(s) sign, dropping the next deliveries
(a lost webhook), the retry schedule, the delivery log, and sending a crafted
delivery with chosen headers."""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import http.client
import json
import threading
import time
import uuid
from datetime import datetime, timezone
from urllib.parse import urlsplit

from cfbox_watch.emulator.http import ApiError, Request, Response
from cfbox_watch.emulator.shapes import item_full, user_mini

TRIGGERS = frozenset({
    "FILE.UPLOADED", "FILE.PREVIEWED", "FILE.DOWNLOADED", "FILE.TRASHED", "FILE.DELETED", "FILE.RESTORED",
    "FILE.COPIED", "FILE.MOVED", "FILE.LOCKED", "FILE.UNLOCKED", "FILE.RENAMED", "COMMENT.CREATED",
    "COMMENT.UPDATED", "COMMENT.DELETED", "TASK_ASSIGNMENT.CREATED", "TASK_ASSIGNMENT.UPDATED",
    "METADATA_INSTANCE.CREATED", "METADATA_INSTANCE.UPDATED", "METADATA_INSTANCE.DELETED",
    "FOLDER.CREATED", "FOLDER.RENAMED", "FOLDER.DOWNLOADED", "FOLDER.RESTORED", "FOLDER.DELETED",
    "FOLDER.COPIED", "FOLDER.MOVED", "FOLDER.TRASHED", "WEBHOOK.DELETED", "COLLABORATION.CREATED",
    "COLLABORATION.ACCEPTED", "COLLABORATION.REJECTED", "COLLABORATION.REMOVED", "COLLABORATION.UPDATED",
    "SHARED_LINK.DELETED", "SHARED_LINK.CREATED", "SHARED_LINK.UPDATED", "SIGN_REQUEST.COMPLETED",
    "SIGN_REQUEST.DECLINED", "SIGN_REQUEST.EXPIRED", "SIGN_REQUEST.SIGNER_EMAIL_BOUNCED",
})
# The emulator's event types and the webhook trigger each one fires, per item type.
EVENT_TRIGGERS = {
    ("ITEM_UPLOAD", "file"): "FILE.UPLOADED",
    ("ITEM_CREATE", "folder"): "FOLDER.CREATED",
    ("ITEM_MOVE", "file"): "FILE.MOVED",
    ("ITEM_MOVE", "folder"): "FOLDER.MOVED",
    ("ITEM_RENAME", "file"): "FILE.RENAMED",
    ("ITEM_RENAME", "folder"): "FOLDER.RENAMED",
    ("ITEM_TRASH", "file"): "FILE.TRASHED",
    ("ITEM_TRASH", "folder"): "FOLDER.TRASHED",
}
SIGN_WITH = ("both", "primary", "secondary", "wrong", "none")
DEFAULTS = {
    "sign_with": "both",            # which signature headers deliveries carry
    "drop_next": 0,                 # the next N notifications are silently lost
    "retry_delays": [0.5, 1.0, 2.0, 4.0],  # Box: up to 12 retries over ~2 h; scaled down
    "timeout": 30.0,                # Box waits 30 s for a 2xx
}
LIST_MAX = 200

SCHEMA = """
CREATE TABLE IF NOT EXISTS webhooks (id TEXT PRIMARY KEY, target_id TEXT NOT NULL, target_type TEXT NOT NULL,
  address TEXT NOT NULL, triggers TEXT NOT NULL, created_by TEXT NOT NULL, created_at TEXT NOT NULL)
"""


def _now_rfc3339(ts: float | None = None) -> str:
    return datetime.fromtimestamp(int(time.time() if ts is None else ts), timezone.utc).isoformat()


def sign(body: bytes, timestamp: str, key: str) -> str:
    mac = hmac.new(key.encode("utf-8"), body, hashlib.sha256)
    mac.update(timestamp.encode("utf-8"))
    return base64.b64encode(mac.digest()).decode("ascii")


class Hub:
    """Per-emulator webhook state: settings, the retry schedule, the delivery log."""

    def __init__(self, app):
        self.app = app
        app.store.x(SCHEMA)
        self.settings = json.loads(json.dumps(DEFAULTS))
        self.lock = threading.Lock()
        self.wake = threading.Condition(self.lock)
        self.queue: list[tuple[float, int, dict]] = []   # (due, seq, job)
        self.seq = 0
        self.log: list[dict] = []
        self.thread = threading.Thread(target=self._run, name="emulator-webhooks", daemon=True)
        self.thread.start()

    # -- keys ------------------------------------------------------------------------
    def keys(self) -> tuple[str, str]:
        cfg = json.loads(self.app.store.meta("config_json"))
        hooks = cfg.get("webhooks") or {}
        return hooks.get("primaryKey", ""), hooks.get("secondaryKey", "")

    # -- firing ----------------------------------------------------------------------
    def fire(self, event_type: str, row: dict, actor: str) -> None:
        trigger = EVENT_TRIGGERS.get((event_type, row["type"]))
        if trigger is None:
            return
        store = self.app.store
        ancestors = {r["id"] for r in store.chain(row)[1:]}
        if not ancestors:
            return
        marks = ",".join("?" * len(ancestors))
        hooks = store.q(f"SELECT * FROM webhooks WHERE target_type='folder' AND target_id IN ({marks})",
                        tuple(ancestors))
        for hook in hooks:
            if trigger not in json.loads(hook["triggers"]):
                continue
            body = {
                "type": "webhook_event", "id": str(uuid.uuid4()), "created_at": _now_rfc3339(),
                "trigger": trigger, "webhook": {"id": hook["id"], "type": "webhook"},
                "created_by": user_mini(store, actor),
                "source": item_full(store, hook["created_by"], row),
                "additional_info": [],
            }
            job = {"hook_id": hook["id"], "address": hook["address"], "trigger": trigger, "source_id": row["id"],
                   "body": json.dumps(body).encode(), "body_id": body["id"], "attempt": 0}
            with self.lock:
                if self.settings["drop_next"] > 0:
                    self.settings["drop_next"] -= 1
                    self.log.append(self._entry(job, None, status=None, error="dropped (test control)"))
                    continue
                self._schedule(job, 0.0)

    def _schedule(self, job: dict, delay: float) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (time.monotonic() + delay, self.seq, job))
        self.wake.notify_all()

    @staticmethod
    def _entry(job: dict, delivery_id: str | None, **kw) -> dict:
        return {"webhook_id": job["hook_id"], "body_id": job["body_id"], "delivery_id": delivery_id,
                "trigger": job["trigger"], "source_id": job["source_id"], "address": job["address"],
                "attempt": job["attempt"], "at": time.time(), **kw}

    # -- delivering --------------------------------------------------------------------
    def headers(self, body: bytes, *, sign_with: str, timestamp: str | None = None) -> dict:
        primary, secondary = self.keys()
        ts = timestamp or _now_rfc3339()
        out = {"Content-Type": "application/json; charset=UTF-8", "BOX-DELIVERY-ID": str(uuid.uuid4()),
               "BOX-DELIVERY-TIMESTAMP": ts, "BOX-SIGNATURE-VERSION": "1", "BOX-SIGNATURE-ALGORITHM": "HmacSHA256"}
        if sign_with in ("both", "primary"):
            out["BOX-SIGNATURE-PRIMARY"] = sign(body, ts, primary)
        if sign_with in ("both", "secondary"):
            out["BOX-SIGNATURE-SECONDARY"] = sign(body, ts, secondary)
        if sign_with == "wrong":
            out["BOX-SIGNATURE-PRIMARY"] = sign(body, ts, "not-the-app-key")
            out["BOX-SIGNATURE-SECONDARY"] = sign(body, ts, "not-the-app-key-either")
        return out

    def post(self, address: str, body: bytes, headers: dict, timeout: float) -> tuple[int, bytes]:
        """One POST to a loopback address; (status, body) or raises OSError."""
        url = urlsplit(address)
        if url.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise OSError(f"the emulator only delivers to loopback, not {url.hostname}")
        cls = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        conn = cls(url.hostname, url.port, timeout=timeout)
        try:
            conn.request("POST", (url.path or "/") + (f"?{url.query}" if url.query else ""), body=body,
                         headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read(4096)
        finally:
            conn.close()

    def _run(self) -> None:
        while not self.app.stopping:
            with self.lock:
                if not self.queue or self.queue[0][0] > time.monotonic():
                    wait = 0.5 if not self.queue else min(0.5, self.queue[0][0] - time.monotonic())
                    self.wake.wait(max(0.0, wait))
                    continue
                _, _, job = heapq.heappop(self.queue)
                sign_with, timeout = self.settings["sign_with"], float(self.settings["timeout"])
                delays = list(self.settings["retry_delays"])
            self._attempt(job, sign_with, timeout, delays)

    def _attempt(self, job: dict, sign_with: str, timeout: float, delays: list[float]) -> None:
        hook = self.app.store.q1("SELECT id FROM webhooks WHERE id=?", (job["hook_id"],))
        if hook is None:
            return  # deleted meanwhile: Box stops delivering too
        headers = self.headers(job["body"], sign_with=sign_with)
        status, error = None, None
        try:
            status, _ = self.post(job["address"], job["body"], headers, timeout)
        except (OSError, http.client.HTTPException) as e:
            error = f"{e.__class__.__name__}: {e}"
        with self.lock:
            self.log.append(self._entry(job, headers["BOX-DELIVERY-ID"], status=status, error=error))
            if del_ok(status):
                return
            if job["attempt"] < len(delays):
                delay = delays[job["attempt"]]
                job = {**job, "attempt": job["attempt"] + 1}
                self._schedule(job, float(delay))


def del_ok(status: int | None) -> bool:
    return status is not None and 200 <= status < 300


_hub_lock = threading.Lock()


def hub(app) -> Hub:
    h = getattr(app, "_webhook_hub", None)
    if h is None:
        with _hub_lock:
            h = getattr(app, "_webhook_hub", None)
            if h is None:
                h = Hub(app)
                app._webhook_hub = h
    return h


def on_item_event(app, event_type: str, row: dict, actor: str) -> None:
    """Called by `items.emit` after every recorded change."""
    if (event_type, row["type"]) in EVENT_TRIGGERS:
        hub(app).fire(event_type, row, actor)


# ------------------------------------------------------------------ /2.0/webhooks API


def _webhook_json(app, row: dict) -> dict:
    return {"id": row["id"], "type": "webhook", "target": {"id": row["target_id"], "type": row["target_type"]},
            "created_by": user_mini(app.store, row["created_by"]), "created_at": row["created_at"],
            "address": row["address"], "triggers": json.loads(row["triggers"])}


def _own(app, req: Request) -> dict:
    hub(app)
    row = app.store.q1("SELECT * FROM webhooks WHERE id=? AND created_by=?", (req.params["id"], req.user))
    if row is None:
        raise ApiError(404, "not_found", "Not Found: the webhook does not exist or you do not have access to it")
    return row


def _check_target(app, user: str, target) -> tuple[str, str]:
    from cfbox_watch.emulator.items import visible

    if not isinstance(target, dict) or target.get("type") not in ("file", "folder") or not target.get("id"):
        raise ApiError(400, "bad_request", "target must be {\"id\": ..., \"type\": \"file\"|\"folder\"}")
    tid, ttype = str(target["id"]), target["type"]
    if tid == "0":
        raise ApiError(400, "bad_request", "Webhooks cannot be created on the root folder")
    visible(app, user, tid, ttype)
    return tid, ttype


def _check_address(address) -> str:
    if not isinstance(address, str) or not address:
        raise ApiError(400, "bad_request", "address is required")
    url = urlsplit(address)
    loopback = url.hostname in ("127.0.0.1", "localhost", "::1")
    if url.scheme != "https" and not (url.scheme == "http" and loopback):
        raise ApiError(400, "bad_request", "address must be an https URL (the emulator also accepts "
                                           "http on loopback)")
    return address


def _check_triggers(triggers) -> list[str]:
    if not isinstance(triggers, list) or not triggers:
        raise ApiError(400, "bad_request", "triggers must be a non-empty list")
    bad = [t for t in triggers if t not in TRIGGERS]
    if bad:
        raise ApiError(400, "bad_request", f"Unknown trigger(s): {bad}")
    return list(dict.fromkeys(triggers))


def _clash(app, user: str, tid: str, ttype: str, exclude: str | None = None) -> None:
    row = app.store.q1("SELECT id FROM webhooks WHERE target_id=? AND target_type=? AND created_by=? AND id!=?",
                       (tid, ttype, user, exclude or ""))
    if row is not None:
        raise ApiError(409, "conflict", f"Webhook:{row['id']} already exists on the specified target.")


def list_webhooks(app, req: Request) -> Response:
    hub(app)
    limit = min(req.int_query("limit", 100, 1, 10 ** 6), LIST_MAX)
    try:
        start = int(base64.urlsafe_b64decode(req.query["marker"]).decode()) if req.query.get("marker") else 0
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "invalid_parameter", "Invalid marker") from None
    rows = app.store.q("SELECT * FROM webhooks WHERE created_by=? ORDER BY CAST(id AS INTEGER) LIMIT ? OFFSET ?",
                       (req.user, limit + 1, start))
    nxt = base64.urlsafe_b64encode(str(start + limit).encode()).decode() if len(rows) > limit else None
    return Response.json(200, {"limit": limit, "next_marker": nxt, "prev_marker": None,
                               "entries": [_webhook_json(app, r) for r in rows[:limit]]})


def create_webhook(app, req: Request) -> Response:
    hub(app)
    body = req.json()
    tid, ttype = _check_target(app, req.user, body.get("target"))
    address = _check_address(body.get("address"))
    triggers = _check_triggers(body.get("triggers"))
    with app.store.lock:
        _clash(app, req.user, tid, ttype)
        wid = app.store.new_id()
        app.store.x("INSERT INTO webhooks VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (wid, tid, ttype, address, json.dumps(triggers), req.user, app.now_iso()))
    return Response.json(201, _webhook_json(app, app.store.q1("SELECT * FROM webhooks WHERE id=?", (wid,))))


def get_webhook(app, req: Request) -> Response:
    return Response.json(200, _webhook_json(app, _own(app, req)))


def update_webhook(app, req: Request) -> Response:
    row = _own(app, req)
    body = req.json()
    tid, ttype = row["target_id"], row["target_type"]
    if body.get("target") is not None:
        tid, ttype = _check_target(app, req.user, body["target"])
    address = _check_address(body["address"]) if body.get("address") is not None else row["address"]
    triggers = _check_triggers(body["triggers"]) if body.get("triggers") is not None else json.loads(row["triggers"])
    with app.store.lock:
        _clash(app, req.user, tid, ttype, exclude=row["id"])
        app.store.x("UPDATE webhooks SET target_id=?, target_type=?, address=?, triggers=? WHERE id=?",
                    (tid, ttype, address, json.dumps(triggers), row["id"]))
    return Response.json(200, _webhook_json(app, app.store.q1("SELECT * FROM webhooks WHERE id=?", (row["id"],))))


def delete_webhook(app, req: Request) -> Response:
    row = _own(app, req)
    app.store.x("DELETE FROM webhooks WHERE id=?", (row["id"],))
    return Response.empty(204)


# ------------------------------------------------------------------ test controls


def control_settings(app, req: Request) -> dict:
    h = hub(app)
    body = req.json()
    unknown = set(body) - set(DEFAULTS)
    if unknown:
        raise ApiError(400, "bad_request", f"Unknown webhook settings: {sorted(unknown)}")
    if "sign_with" in body and body["sign_with"] not in SIGN_WITH:
        raise ApiError(400, "bad_request", f"sign_with must be one of {SIGN_WITH}")
    with h.lock:
        h.settings.update(body)
        return dict(h.settings)


def control_deliveries(app, req: Request) -> list:
    h = hub(app)
    with h.lock:
        return list(h.log)


def control_all(app, req: Request) -> list:
    hub(app)
    return [_webhook_json(app, r) for r in app.store.q("SELECT * FROM webhooks ORDER BY CAST(id AS INTEGER)")]


def control_send(app, req: Request) -> dict:
    """A crafted delivery: body (object or text) signed per `sign_with`, at `timestamp`
    (RFC 3339 text) or `age` seconds ago, with `headers` overriding any header
    (a null value removes it); answers what the receiver said."""
    h = hub(app)
    spec = req.json()
    body = spec.get("body")
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    if spec.get("body_b64") is not None:
        raw = base64.b64decode(spec["body_b64"])
    ts = spec.get("timestamp") or _now_rfc3339(time.time() - float(spec.get("age") or 0))
    headers = h.headers(raw, sign_with=spec.get("sign_with", "both"), timestamp=ts)
    for k, v in (spec.get("headers") or {}).items():
        match = [x for x in headers if x.lower() == k.lower()]
        for x in match:
            del headers[x]
        if v is not None:
            headers[k] = str(v)
    try:
        status, answer = h.post(_check_address(spec["address"]), raw, headers, float(spec.get("timeout", 30)))
    except (OSError, http.client.HTTPException) as e:
        return {"status": None, "error": f"{e.__class__.__name__}: {e}", "headers": headers}
    return {"status": status, "body": answer.decode("utf-8", "replace"), "headers": headers}


CONTROL_ROUTES = [
    ("POST", r"/_emulator/webhooks/settings", control_settings),
    ("GET", r"/_emulator/webhooks/deliveries", control_deliveries),
    ("GET", r"/_emulator/webhooks/all", control_all),
    ("POST", r"/_emulator/webhooks/send", control_send),
]

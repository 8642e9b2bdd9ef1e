"""The HTTP endpoint Box delivers webhooks to (behind the studio's TLS reverse proxy).

It only verifies and hands over: a valid, first-seen delivery becomes a
`request_scan` on the incoming side (an in-memory wake-up), and the answer goes back
at once, far inside Box's 30 s limit; the download itself happens later through the
normal queue.  Everything else gets a 4xx and one log line naming the reason, the
peer and the delivery id, never the body, a signature or a key.

Plain HTTP on purpose: TLS (Box requires HTTPS on port 443 with a CA-signed
certificate) is terminated by the reverse proxy, which forwards to `listen`."""

from __future__ import annotations

import json
import logging
import socket
import sqlite3
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from cfbox_watch.db import open_db
from cfbox_watch.webhooks import signature, state

log = logging.getLogger("cfbox_watch.webhooks.receiver")

# Box's notifications are a few KB (the source item's JSON); anything far larger is
# not from Box, and reading it would only cost memory.
MAX_BODY = 256 * 1024
READ_TIMEOUT = 10.0   # a peer that stalls mid-body does not hold a thread for long
IDENTITY = {"service": "cfbox-watch webhooks"}
LOG_BURST = 20        # refusal lines per LOG_WINDOW; the rest are counted
LOG_WINDOW = 60.0


@dataclass(frozen=True)
class Notice:
    """What the incoming side needs from a delivery."""

    body_id: str
    delivery_id: str | None
    trigger: str | None
    webhook_id: str | None
    source_type: str | None
    source_id: str | None
    parent_id: str | None


def parse_notice(body: bytes, delivery_id: str | None) -> Notice | str:
    """The notice in a verified body, or a reason it is unusable (for a 400)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return "body is not valid JSON"
    if not isinstance(data, dict):
        return "body is not a JSON object"
    body_id = data.get("id")
    if not isinstance(body_id, (str, int)) or not str(body_id).strip():
        return "body has no notification id"
    source = data.get("source") if isinstance(data.get("source"), dict) else {}
    parent = source.get("parent") if isinstance(source.get("parent"), dict) else {}
    hook = data.get("webhook") if isinstance(data.get("webhook"), dict) else {}

    def s(v):
        return None if v is None else str(v)

    return Notice(str(body_id), delivery_id, s(data.get("trigger")), s(hook.get("id")),
                  s(source.get("type")), s(source.get("id")), s(parent.get("id")))


# Malformed deliveries are 400s; well-formed ones whose signature or time fails are 403s.
_STATUS = {"bad_version": 400, "bad_algorithm": 400, "missing_timestamp": 400, "bad_timestamp": 400}


class WebhookReceiver:
    """One listening endpoint per connection.  `keys()` returns (primary, secondary);
    `on_notice(notice)` must return quickly (it wakes a poller, nothing more)."""

    def __init__(self, host: str, port: int, *, label: str, keys: Callable[[], tuple[str | None, str | None]],
                 db_path, on_notice: Callable[[Notice], bool], max_body: int = MAX_BODY,
                 clock: Callable[[], float] = time.time):
        self.label = label
        self.keys = keys
        self.on_notice = on_notice
        self.max_body = max_body
        self.clock = clock
        self.counts: dict[str, int] = {}
        self._count_lock = threading.Lock()
        self._db = open_db(db_path)
        state.ensure(self._db)
        self._db_lock = threading.Lock()
        self._log_gate = LogGate(LOG_BURST, LOG_WINDOW)
        self._server = _Server((host, port), _Handler, self)
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self._server.server_address[:2]

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name=f"webhooks:{self.label}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5)
        self._server.server_close()
        with self._db_lock:
            self._db.close()

    def count(self, outcome: str) -> None:
        with self._count_lock:
            self.counts[outcome] = self.counts.get(outcome, 0) + 1

    # -- the decision for one POST (the handler does only I/O) -------------------------
    def handle(self, body: bytes, headers: dict[str, str], peer: str) -> tuple[int, dict]:
        delivery_id = headers.get(signature.H_DELIVERY_ID)
        where = f"from {peer}, delivery {_short(delivery_id)}"
        primary, secondary = self.keys()
        verdict = signature.verify(body, headers, primary, secondary, self.clock())
        if not verdict.ok:
            return self._refuse(_STATUS.get(verdict.reason, 403), verdict.reason, verdict.detail, where)
        notice = parse_notice(body, delivery_id)
        if isinstance(notice, str):
            return self._refuse(400, "malformed", notice, where)
        try:
            with self._db_lock:
                fresh = state.first_sighting(self._db, notice.body_id, delivery_id, notice.trigger,
                                             notice.source_id, self.clock())
        except sqlite3.Error as e:
            # Box retries a 5xx later; the listing catches the file meanwhile anyway.
            log.error("webhook %s: cannot record the delivery in the state DB (%s); answering 503", where, e)
            self.count("db_error")
            return 503, {"error": "state database unavailable"}
        if not fresh:
            return self._refuse(409, "replay", f"notification {_short(notice.body_id)} was already handled", where)
        taken = self.on_notice(notice)
        self.count("accepted")
        log.info("webhook %s %s %s (%s key): %s", notice.trigger or "?", notice.source_type or "item",
                 notice.source_id or "?", verdict.key, "listing its folder" if taken else
                 "no running mapping watches that folder; ignored",
                 extra={"fields": {"ACTION": "webhook", "BOX_FILE_ID": notice.source_id,
                                   "DELIVERY_ID": delivery_id}})
        return 200, {"ok": True}

    def _refuse(self, status: int, reason: str, detail: str, where: str) -> tuple[int, dict]:
        self.count(reason)
        shown, suppressed = self._log_gate.admit(time.monotonic())
        if suppressed:
            log.warning("webhook: %d more refused deliveries were not logged (at most %d lines per %d s)",
                        suppressed, LOG_BURST, int(LOG_WINDOW))
        if shown:
            log.warning("webhook delivery refused (%s): %s; %s", reason, detail, where,
                        extra={"fields": {"ACTION": "webhook-refused", "REASON": reason}})
        return status, {"error": reason}


class LogGate:
    """At most `burst` refusal lines per `window` seconds: the endpoint faces the
    internet, and a flood of junk must not drown the journal.  `admit(now)` returns
    (log this one?, how many were held back in the window that just ended)."""

    def __init__(self, burst: int, window: float):
        self.burst, self.window = burst, window
        self.start: float | None = None
        self.used = 0
        self.held = 0
        self.lock = threading.Lock()

    def admit(self, now: float) -> tuple[bool, int]:
        with self.lock:
            report = 0
            if self.start is None or now - self.start >= self.window:
                report, self.held = self.held, 0
                self.start, self.used = now, 0
            if self.used < self.burst:
                self.used += 1
                return True, report
            self.held += 1
            return False, report


def _short(value: str | None, limit: int = 64) -> str:
    if not value:
        return "(none)"
    text = "".join(c if c.isprintable() else "?" for c in value)
    return text if len(text) <= limit else text[:limit] + "..."


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, handler, receiver: WebhookReceiver):
        self.receiver = receiver
        if ":" in addr[0]:      # an IPv6 listen address such as [::1]:8470
            self.address_family = socket.AF_INET6
        super().__init__(addr, handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "cfbox-watch"
    sys_version = ""
    timeout = READ_TIMEOUT
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):  # the receiver logs outcomes itself
        pass

    def _answer(self, status: int, obj: dict) -> None:
        data = json.dumps(obj).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            self.close_connection = True

    def do_GET(self):
        # `cfbox-watch check` fetches the public URL and expects this answer: it proves
        # the reverse proxy reaches this daemon, not some other page.
        self._answer(200, IDENTITY)

    do_HEAD = do_GET

    def do_POST(self):
        rec: WebhookReceiver = self.server.receiver
        peer = self.client_address[0]
        delivery = self.headers.get(signature.H_DELIVERY_ID)
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self.close_connection = True
            rec._refuse(411, "no_length", "chunked body (Box sends Content-Length)", f"from {peer}")
            return self._answer(411, {"error": "length required"})
        try:
            length = int(self.headers.get("Content-Length") or "")
        except ValueError:
            self.close_connection = True
            rec._refuse(411, "no_length", "no usable Content-Length", f"from {peer}, delivery {_short(delivery)}")
            return self._answer(411, {"error": "length required"})
        if length < 0 or length > rec.max_body:
            # A moderately oversized body is drained so the sender reads our 413 rather
            # than a reset; a huge one is not read at all (the connection is closed).
            self.close_connection = True
            left = length if 0 < length <= 4 * rec.max_body else 0
            try:
                while left > 0:
                    chunk = self.rfile.read(min(65536, left))
                    if not chunk:
                        break
                    left -= len(chunk)
            except OSError:
                return
            rec._refuse(413, "too_large", f"body of {length} bytes exceeds {rec.max_body}",
                        f"from {peer}, delivery {_short(delivery)}")
            return self._answer(413, {"error": "body too large"})
        try:
            body = self.rfile.read(length)
        except (OSError, socket.timeout):
            self.close_connection = True
            return
        if len(body) != length:
            self.close_connection = True
            return
        try:
            status, obj = rec.handle(body, signature.lower_headers(self.headers), peer)
        except Exception:  # a bug must not take the listener down; Box retries
            log.exception("webhook handling failed")
            status, obj = 500, {"error": "internal error"}
        self._answer(status, obj)

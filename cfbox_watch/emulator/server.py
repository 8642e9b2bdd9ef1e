"""The HTTP server: routing, bearer checks, counters, faults and response writing.

Routes mirror Box's hosts on one port: the API under /2.0 (api.box.com), uploads under
/api/2.0 (upload.box.com/api), OAuth at /oauth2/token, plus the emulator's own download
links (/_dl), long-poll (/_realtime) and test controls (/_emulator, no auth)."""

from __future__ import annotations

import re
import socket
import struct
import sys
import time
import traceback
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qs, urlsplit

from cfbox_watch.emulator import auth, control_api, downloads, events, items, sessions, uploads, webhooks
from cfbox_watch.emulator.app import Emulator
from cfbox_watch.emulator.http import CHUNK, ApiError, BodyReader, Request, Response, Throttle
from cfbox_watch.emulator.shapes import error_body


@dataclass
class Route:
    method: str
    template: str
    func: Callable
    auth: bool = True
    upload: bool = False   # counts against the per-user upload rate limit

    def __post_init__(self):
        self.regex = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.template) + "$")


def token_endpoint(app: Emulator, req: Request) -> Response:
    form = auth.parse_form(req)
    return Response.json(200, auth.issue_token(app.store, form, float(app.settings["token_ttl"]),
                                               bool(app.settings["app_authorized"])))


ROUTES = [
    Route("POST", "/oauth2/token", token_endpoint, auth=False),
    Route("GET", "/2.0/users/me", items.get_me),
    Route("GET", "/2.0/folders/{id}", items.get_folder),
    Route("GET", "/2.0/folders/{id}/items", items.list_items),
    Route("POST", "/2.0/folders", items.create_folder),
    Route("PUT", "/2.0/folders/{id}", items.update_folder),
    Route("DELETE", "/2.0/folders/{id}", items.delete_folder),
    Route("OPTIONS", "/2.0/files/content", items.preflight),
    Route("OPTIONS", "/2.0/files/{id}/content", items.preflight),
    Route("GET", "/2.0/files/{id}", items.get_file),
    Route("PUT", "/2.0/files/{id}", items.update_file),
    Route("DELETE", "/2.0/files/{id}", items.delete_file),
    Route("GET", "/2.0/files/{id}/versions", items.list_versions),
    Route("GET", "/2.0/files/{id}/content", items.download),
    Route("GET", "/2.0/events", events.get_events),
    Route("OPTIONS", "/2.0/events", events.long_poll_info),
    Route("GET", "/2.0/webhooks", webhooks.list_webhooks),
    Route("POST", "/2.0/webhooks", webhooks.create_webhook),
    Route("GET", "/2.0/webhooks/{id}", webhooks.get_webhook),
    Route("PUT", "/2.0/webhooks/{id}", webhooks.update_webhook),
    Route("DELETE", "/2.0/webhooks/{id}", webhooks.delete_webhook),
    Route("POST", "/api/2.0/files/content", uploads.upload_file, upload=True),
    Route("POST", "/api/2.0/files/upload_sessions", sessions.create_session, upload=True),
    Route("POST", "/api/2.0/files/{id}/upload_sessions", sessions.create_version_session, upload=True),
    Route("GET", "/api/2.0/files/upload_sessions/{id}", sessions.get_session),
    Route("PUT", "/api/2.0/files/upload_sessions/{id}", sessions.upload_part),
    Route("DELETE", "/api/2.0/files/upload_sessions/{id}", sessions.abort_session),
    Route("GET", "/api/2.0/files/upload_sessions/{id}/parts", sessions.list_parts),
    Route("POST", "/api/2.0/files/upload_sessions/{id}/commit", sessions.commit_session),
    Route("POST", "/api/2.0/files/{id}/content", uploads.upload_version, upload=True),
    Route("GET", "/_dl/{token}", downloads.serve, auth=False),
    Route("GET", "/_realtime/subscribe", events.long_poll, auth=False),
]


def match(method: str, path: str) -> tuple[Route | None, dict, bool]:
    """(route, params, path_exists_for_another_method)."""
    other = False
    for r in ROUTES:
        m = r.regex.match(path)
        if m:
            if r.method == method:
                return r, m.groupdict(), True
            other = True
    return None, {}, other


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle on, delayed ACK stalls the
    # second write ~40 ms on every keep-alive request.
    disable_nagle_algorithm = True
    server_version = "cfbox-emulator"
    sys_version = ""

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, fmt, *args):  # quiet: tests read stdout for the ready line
        if self.server.verbose:
            sys.stderr.write("emulator: " + (fmt % args) + "\n")

    def do_GET(self):
        self.handle_any()

    do_POST = do_PUT = do_DELETE = do_OPTIONS = do_HEAD = do_PATCH = do_GET

    def finish(self):
        try:
            super().finish()
        except OSError:
            pass

    def handle_any(self) -> None:
        app: Emulator = self.server.app
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        host = self.headers.get("Host") or "%s:%d" % self.server.server_address[:2]
        body = BodyReader(self.rfile, self.headers, Throttle(lambda: app.faults.bandwidth_for(url.path)))
        req = Request(self.command, url.path, query, self.headers, body, f"http://{host}")
        try:
            resp, decision = self.dispatch(app, req)
        except ConnectionError:
            self.close_connection = True
            return
        if decision is not None and decision.reset and body.length:
            self.reset_connection()
            return
        try:
            body.drain()
        except ConnectionError:
            self.close_connection = True
            return
        self.send(resp, reset=bool(decision and (decision.reset or decision.reset_after)),
                  corrupt=bool(decision and decision.corrupt and resp.is_download))

    def dispatch(self, app: Emulator, req: Request):
        if req.path.startswith("/_emulator/"):
            try:
                return control_api.dispatch(app, req), None
            except ApiError as e:
                return e.response(), None
        route, params, other = match(req.method, req.path)
        if route is None:
            app.count(f"{req.method} <unknown>")
            if other:
                return ApiError(405, "method_not_allowed", f"Method {req.method} not allowed here").response(), None
            return ApiError(404, "not_found", f"Not Found: {req.path}").response(), None
        req.params = params
        app.count(f"{req.method} {route.template}")
        decision = app.faults.decide(req.path)
        if decision.latency:
            time.sleep(decision.latency)
        if decision.reset and req.body.length:
            for _ in range(max(1, req.body.length // 2 // CHUNK)):
                if not req.body.read(min(CHUNK, req.body.length // 2 or 1)):
                    break
            return None, decision
        if decision.status == 429:
            ra = str(app.faults.plan.retry_after)
            return ApiError(429, "rate_limit_exceeded", "Request rate limit exceeded, please try again later",
                            headers={"Retry-After": ra}).response(), decision
        if decision.status:
            code = "internal_server_error" if decision.status == 500 else "unavailable"
            return ApiError(decision.status, code, "Injected fault").response(), decision
        try:
            if route.auth:
                req.user = auth.bearer_user(app.store, req)
                wait = app.rate_limits.check(req.user, route.upload)
                if wait is not None:
                    raise ApiError(429, "rate_limit_exceeded", "Request rate limit exceeded, please try again later",
                                   headers={"Retry-After": str(int(wait + 0.999))})
            return route.func(app, req), decision
        except ApiError as e:
            return e.response(), decision
        except ConnectionError:
            raise
        except Exception:
            traceback.print_exc(file=sys.stderr)
            return Response.json(500, error_body(500, "internal_server_error", "Emulator bug (see its stderr)")), decision

    def reset_connection(self) -> None:
        """Abort with a TCP RST, like a proxy or a flaky link dropping mid-body."""
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass

    def send(self, resp: Response, *, reset: bool = False, corrupt: bool = False) -> None:
        app: Emulator = self.server.app
        length = resp.file_length if resp.file is not None else len(resp.body)
        try:
            self.send_response(resp.status)
            for k, v in resp.headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(length))
            self.send_header("box-request-id", "emu")
            self.end_headers()
            if self.command == "HEAD":
                return
            cut = length // 2 if reset else None
            path = urlsplit(self.path).path
            throttle = Throttle(lambda: app.faults.bandwidth_for(path))
            sent = 0
            for chunk in self._chunks(resp, length):
                if corrupt and sent == 0 and chunk:
                    chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
                if cut is not None and sent + len(chunk) > cut:
                    self.wfile.write(chunk[:cut - sent])
                    self.reset_connection()
                    return
                self.wfile.write(chunk)
                sent += len(chunk)
                throttle.passed(len(chunk))
            if reset:
                self.reset_connection()
        except OSError:
            self.close_connection = True

    @staticmethod
    def _chunks(resp: Response, length: int):
        if resp.file is None:
            for i in range(0, len(resp.body), CHUNK):
                yield resp.body[i:i + CHUNK]
            return
        with open(resp.file, "rb") as f:
            f.seek(resp.file_start)
            left = length
            while left > 0:
                data = f.read(min(CHUNK, left))
                if not data:
                    break
                left -= len(data)
                yield data


class EmulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, app: Emulator, verbose: bool = False):
        self.app = app
        self.verbose = verbose
        super().__init__(addr, Handler)

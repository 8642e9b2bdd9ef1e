"""Client for the emulator's test controls (/_emulator/, no auth), used by tests,
benchmarks and the demo to act as the vendor, inject faults and inspect state."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request


class EmulatorControlError(RuntimeError):
    pass


class EmulatorControl:
    def __init__(self, base_url: str, timeout: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, body=None, *, query: dict | None = None, raw: bytes | None = None,
              expect_json: bool = True):
        url = f"{self.base_url}/_emulator/{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data, headers = None, {}
        if raw is not None:
            data, headers = raw, {"Content-Type": "application/octet-stream"}
        elif body is not None:
            data, headers = json.dumps(body).encode(), {"Content-Type": "application/json"}
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                payload = r.read()
        except urllib.error.HTTPError as e:
            if e.code == 404 and method == "GET" and path == "find":
                return None
            raise EmulatorControlError(f"{method} {path}: {e.code} {e.read()[:300]!r}") from None
        if not expect_json:
            return payload
        return json.loads(payload) if payload else None

    # -- knobs ---------------------------------------------------------------
    def info(self) -> dict:
        return self._call("GET", "info")

    def counters(self) -> dict:
        """"METHOD /route/{template}" -> number of requests, plus "total"."""
        return self._call("GET", "counters")

    def reset_counters(self) -> None:
        self._call("POST", "counters/reset", {})

    def faults(self, error_500: float = 0.0, error_503: float = 0.0, rate_429: float = 0.0, retry_after: int = 1,
               reset: float = 0.0, latency: float = 0.0, bandwidth: float | None = None,
               corrupt_download: float = 0.0, path_regex: str | None = None, reset_after: float = 0.0) -> None:
        """Shares (0..1) of matching requests that fail: 500/503/429 answers; `reset` cuts the
        connection before the request is handled (half its body read, or half the answer sent),
        `reset_after` handles it fully and then cuts the answer (the client cannot tell whether
        it worked); `latency` seconds added; `bandwidth` bytes/s both ways; `corrupt_download`
        flips a byte of downloaded content."""
        self._call("POST", "faults", dict(error_500=error_500, error_503=error_503, rate_429=rate_429,
                                          retry_after=retry_after, reset=reset, reset_after=reset_after,
                                          latency=latency,
                                          bandwidth=bandwidth, corrupt_download=corrupt_download,
                                          path_regex=path_regex))

    def clear_faults(self) -> None:
        self._call("DELETE", "faults")

    def rate_limits(self, api_per_minute: int | None = None, uploads_per_minute: int | None = None) -> None:
        self._call("POST", "rate_limits", {"api_per_minute": api_per_minute, "uploads_per_minute": uploads_per_minute})

    def settings(self, **kw) -> dict:
        """token_ttl, part_size, chunk_min, file_size_limit, direct_upload_max, strict_parts, commit_202, download_202,
        conflicts_shape ("list"|"object"), session_ttl, longpoll_hold, app_authorized."""
        return self._call("POST", "settings", kw)

    def expire_tokens(self) -> None:
        self._call("POST", "expire_tokens", {})

    def expire_sessions(self) -> None:
        self._call("POST", "expire_sessions", {})

    # -- the vendor (another Box user sharing the folders) ----------------------
    def vendor_upload(self, folder_id: str, name: str, data: bytes) -> dict:
        return self._call("POST", "vendor/upload", query={"folder_id": folder_id, "name": name}, raw=data)

    def vendor_mkdir(self, parent_id: str, name: str) -> dict:
        return self._call("POST", "vendor/mkdir", {"parent_id": parent_id, "name": name})

    def vendor_move(self, item_id: str, new_parent_id: str, type: str = "file", name: str | None = None) -> dict:
        return self._call("POST", "vendor/move", {"item_id": item_id, "new_parent_id": new_parent_id,
                                                  "type": type, "name": name})

    def vendor_rename(self, item_id: str, name: str, type: str = "file") -> dict:
        return self._call("POST", "vendor/move", {"item_id": item_id, "new_parent_id": None, "type": type, "name": name})

    def vendor_trash(self, item_id: str, type: str = "file") -> None:
        self._call("POST", "vendor/trash", {"item_id": item_id, "type": type})

    # -- inspection ----------------------------------------------------------
    def tree(self, folder_id: str) -> dict:
        """{id, name, type, children: [...]} with size, sha1, version_count, etag on files."""
        return self._call("GET", f"tree/{folder_id}")

    def file_content(self, file_id: str) -> bytes:
        return self._call("GET", f"files/{file_id}/content", expect_json=False)

    def find(self, folder_id: str, relpath: str) -> dict | None:
        """The live item at `relpath` (exact names, '/' separated) under the folder, or None."""
        return self._call("GET", "find", query={"folder_id": folder_id, "path": relpath})

    def item_count(self, folder_id: str) -> int:
        """Live items (files and folders) anywhere below the folder."""
        return self._call("GET", f"item_count/{folder_id}")["count"]

    def files(self, folder_id: str) -> dict[str, dict]:
        """relpath -> tree node for every file below the folder."""
        out: dict[str, dict] = {}

        def walk(node, prefix):
            for c in node.get("children", []):
                rel = f"{prefix}{c['name']}"
                if c["type"] == "file":
                    out[rel] = c
                else:
                    walk(c, rel + "/")

        walk(self.tree(folder_id), "")
        return out

    # -- webhooks (V2) -------------------------------------------------------
    def webhook_settings(self, **kw) -> dict:
        """sign_with ("both"|"primary"|"secondary"|"wrong"|"none"), drop_next (the next N
        notifications are lost), retry_delays (seconds between attempts), timeout."""
        return self._call("POST", "webhooks/settings", kw)

    def webhook_deliveries(self) -> list[dict]:
        """Every delivery attempt: webhook_id, body_id, delivery_id, trigger, source_id,
        address, attempt, status (None on a network error or a drop), error."""
        return self._call("GET", "webhooks/deliveries")

    def webhooks(self) -> list[dict]:
        """Every registered webhook (any user), as Box's Webhook JSON."""
        return self._call("GET", "webhooks/all")

    def webhook_send(self, address: str, body, *, sign_with: str = "both", timestamp: str | None = None,
                     age: float = 0.0, headers: dict | None = None, body_b64: str | None = None) -> dict:
        """Send one crafted delivery signed with the app's keys (or as `sign_with` says);
        `headers` override (None removes). Answers {status, body, headers}."""
        return self._call("POST", "webhooks/send", {"address": address, "body": body, "sign_with": sign_with,
                                                     "timestamp": timestamp, "age": age, "headers": headers,
                                                     "body_b64": body_b64})


"""Verifying a Box V2 webhook delivery, as a pure function over plain data.

Pure so that every rejection rule is unit-tested without a socket, and so that the
receiver cannot accidentally do work before the verdict: it hands over bytes, headers
and the clock, and gets back a `Verdict` naming the reason, never the keys.

Box signs `body bytes + BOX-DELIVERY-TIMESTAMP` with HMAC-SHA256 under the app's primary
and secondary keys and sends both (base64).  Either may match, which is what lets an
admin rotate one key while the other keeps deliveries valid.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Mapping

MAX_AGE = 600.0        # Box: reject deliveries older than ten minutes
# Box's clock and ours are both NTP-synchronised; a delivery a little "from the future"
# is clock skew, one well ahead is forged or replayed from a skewed sender.
FUTURE_TOLERANCE = 60.0
VERSION = "1"
ALGORITHM = "HmacSHA256"

H_TIMESTAMP = "box-delivery-timestamp"
H_PRIMARY = "box-signature-primary"
H_SECONDARY = "box-signature-secondary"
H_VERSION = "box-signature-version"
H_ALGORITHM = "box-signature-algorithm"
H_DELIVERY_ID = "box-delivery-id"


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str                 # "ok" or a stable code for logs and tests
    detail: str                 # one sentence for the log; never contains a key or signature
    key: str | None = None      # "primary" | "secondary" when ok


def sign(body: bytes, timestamp: str, key: str) -> str:
    """The signature Box sends for `body` delivered at `timestamp` (base64 HMAC-SHA256)."""
    mac = hmac.new(key.encode("utf-8"), body, hashlib.sha256)
    mac.update(timestamp.encode("utf-8"))
    return base64.b64encode(mac.digest()).decode("ascii")


def lower_headers(headers) -> dict[str, str]:
    """Header names are case-insensitive on the wire; Box's SDK reads them lowercase."""
    return {str(k).lower(): str(v) for k, v in headers.items()}


def parse_timestamp(value: str) -> float | None:
    """RFC 3339 (`2026-11-29T23:10:00-08:00` or `...Z`) to epoch seconds; None when
    unparsable or without a zone (a zoneless time cannot be placed in a window)."""
    text = value.strip()
    if len(text) < 20 or text[10] not in "Tt":
        return None
    try:
        dt = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1] in "Zz" else text)
    except ValueError:
        return None
    if dt.tzinfo is None:
        return None
    return dt.timestamp()


def format_timestamp(epoch: float) -> str:
    """How Box writes BOX-DELIVERY-TIMESTAMP (seconds, with an offset)."""
    return datetime.fromtimestamp(int(epoch), timezone.utc).isoformat()


def _matches(expected: str, received: str | None) -> bool:
    if not received:
        return False
    # compare_digest on bytes: constant time for equal lengths and no TypeError on
    # non-ASCII input an attacker may send.
    return hmac.compare_digest(expected.encode("ascii"), received.strip().encode("utf-8", "replace"))


def verify(body: bytes, headers: Mapping[str, str], primary_key: str | None,
           secondary_key: str | None, now: float, *, max_age: float = MAX_AGE,
           future_tolerance: float = FUTURE_TOLERANCE) -> Verdict:
    """The verdict on one delivery.  `headers` must have lowercase names (see
    `lower_headers`); `now` is epoch seconds."""
    if not primary_key and not secondary_key:
        return Verdict(False, "no_keys", "no webhook signature key is configured (config.json "
                                         "webhooks.primaryKey / secondaryKey)")
    version = headers.get(H_VERSION)
    if version != VERSION:
        return Verdict(False, "bad_version", f"{H_VERSION} is {_show(version)}, expected {VERSION!r}")
    algorithm = headers.get(H_ALGORITHM)
    if algorithm != ALGORITHM:
        return Verdict(False, "bad_algorithm", f"{H_ALGORITHM} is {_show(algorithm)}, expected {ALGORITHM!r}")
    raw_ts = headers.get(H_TIMESTAMP)
    if raw_ts is None:
        return Verdict(False, "missing_timestamp", f"{H_TIMESTAMP} is missing")
    ts = parse_timestamp(raw_ts)
    if ts is None:
        return Verdict(False, "bad_timestamp", f"{H_TIMESTAMP} {_show(raw_ts)} is not an RFC 3339 time")
    if now - ts > max_age:
        return Verdict(False, "stale", f"delivered at {raw_ts}, {now - ts:.0f} s ago (limit {max_age:.0f} s)")
    if ts - now > future_tolerance:
        return Verdict(False, "future", f"delivery time {raw_ts} is {ts - now:.0f} s in the future")
    primary, secondary = headers.get(H_PRIMARY), headers.get(H_SECONDARY)
    if not primary and not secondary:
        return Verdict(False, "unsigned", "no BOX-SIGNATURE-PRIMARY or -SECONDARY header")
    # Compute both before deciding, so the time taken does not say which key matched.
    ok_primary = bool(primary_key) and _matches(sign(body, raw_ts, primary_key), primary)
    ok_secondary = bool(secondary_key) and _matches(sign(body, raw_ts, secondary_key), secondary)
    if ok_primary:
        return Verdict(True, "ok", "signature valid (primary key)", "primary")
    if ok_secondary:
        return Verdict(True, "ok", "signature valid (secondary key)", "secondary")
    return Verdict(False, "bad_signature", "signature matches neither the primary nor the secondary key")


def _show(value: str | None, limit: int = 40) -> str:
    if value is None:
        return "missing"
    text = value if len(value) <= limit else value[:limit] + "..."
    return repr(text)

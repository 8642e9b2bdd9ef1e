"""The user event stream (`GET /events`) and its long-poll (`OPTIONS /events` gives a
URL the emulator itself serves, which holds until a change or a timeout)."""

from __future__ import annotations

import json
import secrets
import time

from cfbox_watch.emulator.http import ApiError, Request, Response
from cfbox_watch.emulator.shapes import user_mini

STREAM_TYPES = ("all", "changes", "sync")


def _position(raw: str | None, now: int) -> int:
    if raw is None or raw == "" or raw == "0":
        return 0
    if raw == "now":
        return now
    try:
        return max(0, int(raw))
    except ValueError:
        raise ApiError(400, "invalid_parameter", f"Invalid stream_position '{raw}'") from None


def get_events(app, req: Request) -> Response:
    stream_type = req.query.get("stream_type", "all")
    if stream_type not in STREAM_TYPES:
        if stream_type.startswith("admin_logs"):
            raise ApiError(403, "access_denied_insufficient_permissions",
                           "Enterprise events need an admin token; this app's service account is not an admin")
        raise ApiError(400, "invalid_parameter", f"Invalid stream_type '{stream_type}'")
    limit = min(req.int_query("limit", 100, 1, 10 ** 6), 500)
    now = app.store.last_event_seq()
    pos = _position(req.query.get("stream_position"), now)
    if req.query.get("stream_position") == "now":
        return Response.json(200, {"chunk_size": 0, "next_stream_position": str(now), "entries": []})
    rows = [r for r in app.store.events_after(req.user, pos, limit) if r["seq"] <= now]
    nxt = rows[-1]["seq"] if len(rows) == limit else max(now, pos)
    entries = [{
        "type": "event", "event_id": r["event_id"], "event_type": r["event_type"],
        "created_at": r["created_at"], "recorded_at": r["created_at"],
        "created_by": user_mini(app.store, r["actor_id"]), "session_id": None,
        "source": json.loads(r["source"]), "additional_details": None,
    } for r in rows]
    return Response.json(200, {"chunk_size": len(entries), "next_stream_position": str(nxt), "entries": entries})


def long_poll_info(app, req: Request) -> Response:
    channel = secrets.token_urlsafe(12)
    if len(app.channels) > 10_000:  # channels are cheap hints; forget old ones
        app.channels.clear()
    app.channels[channel] = req.user
    url = f"{req.base_url}/_realtime/subscribe?channel={channel}&stream_type=all"
    return Response.json(200, {"chunk_size": 1, "entries": [{
        "type": "realtime_server", "url": url, "ttl": "10", "max_retries": "10", "retry_timeout": 610}]})


def long_poll(app, req: Request) -> Response:
    user = app.channels.get(req.query.get("channel", ""))
    if user is None:
        return Response.json(200, {"message": "reconnect"})
    now = app.store.last_event_seq()
    raw = req.query.get("stream_position")
    try:
        pos = _position(raw, now) if raw not in (None, "") else now
    except ApiError:
        pos = now
    deadline = time.monotonic() + float(app.settings["longpoll_hold"])
    with app.store.changed:
        while True:
            if app.store.events_after(user, pos, 1):
                return Response.json(200, {"message": "new_change"})
            left = deadline - time.monotonic()
            if left <= 0 or app.stopping:
                return Response.json(200, {"message": "reconnect"})
            app.store.changed.wait(min(left, 0.5))

"""`cfbox-watch status [--json]` and `cfbox-watch retry [--mapping NAME] [PATH...]`.

`status` opens the state DB read-only, so it can run at any time next to the daemon
(WAL lets it read a consistent snapshot while the daemon writes).  The queue figures
come from the engines' own `summarize` functions; the daemon's table adds which Sides
are running, whether one stopped (and why), and when the daemon last checked in.

The JSON shape (`--json`) is a stable interface for scripts and monitoring:

    {
      "version": 1,
      "config": "/etc/cfbox/cfbox.yaml",
      "state_db": "/var/lib/cfbox-watch/state.sqlite3",
      "generated_at": "2026-01-31T12:00:00+00:00",
      "daemon": {"running": true, "pid": 1234, "state": "running",
                 "last_seen": "2026-01-31T11:59:59+00:00"},
      "mappings": [
        {"name": "acme-retouch", "direction": "out",          # "out" = local -> Box
         "kind": "post_production", "connection": "acme",
         "local": "/srv/studio/outgoing/acme", "folder_id": "1234",
         "state": "running",                 # the Side's state, "not running" without daemon
         "error": null,                      # why the mapping stopped, if it did
         "queued": 0, "active": 1, "failed": 0, "done_today": 12,
         "transfers": [{"path": "big.tif", "done": 50000000, "size": 200000000}],
                                             # in flight, when the engine reports progress
         "last_success": "2026-01-31T11:58:00+00:00",
         "problems": [{"path": "shoot/a.jpg", "status": "failed",
                       "error": "...", "attempts": 3}]}
      ],
      "round_trip": [                          # Creative Force (docs/creative-force.md),
        {"name": "acme-retouch", "match": "filename", "return_due": 172800.0,
         "state": "running", "error": null,  # the "<entry>:cf" Side writing completion logs
         "completion_log": {"quiet": 300.0, "name": "{batch}_transfer_completed.log"},
         "sent": 10, "returned": 7, "outstanding": 3, "rejected": 1,
         "oldest_outstanding_age": 3600.0, "overdue": 0, "unmatched_returns": 0,
         "invalid_returns": 1,
         "batches": [{"batch": "P123_OnModel", "sent": 10, "returned": 7, "outstanding": 3,
                      "rejected": 1, "oldest_outstanding_age": 3600.0, "overdue": 0,
                      "completion_log": {"name": "P123_OnModel_transfer_completed.log",
                                         "files": 10, "versions": 1, "box_file_id": "77"}}]}
      ],
      "connections": [{"name": "acme",
                       "health": "ok" | "degraded" | "error" | "unknown",
                       "message": null}]       # degraded: items wait to retry (Box busy
                                              # or unreachable); error: a mapping stopped
    }

New keys may be added; existing keys keep their meaning and type.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sqlite3
import sys
import time
from typing import Any

from cfbox_watch import db as dbmod
from cfbox_watch.config_model import Config
from cfbox_watch.errors import UserError

JSON_VERSION = 1
DAEMON_STALE_AFTER = 30.0   # seconds without a daemon heartbeat before "not running"


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).isoformat(timespec="seconds")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?",
                        (name,)).fetchone() is not None


def read_daemon(conn: sqlite3.Connection | None, now: float | None = None) -> tuple[dict, dict]:
    """(daemon info, {side key: row}) from the daemon's table; empty when it never ran."""
    now = time.time() if now is None else now
    info = {"running": False, "pid": None, "state": "never started", "last_seen": None}
    sides: dict[str, dict] = {}
    if conn is None or not _has_table(conn, "daemon_info"):
        return info, sides
    kv = {r["key"]: r["value"] for r in conn.execute("SELECT key, value FROM daemon_info")}
    pid = int(kv["pid"]) if kv.get("pid") else None
    seen = float(kv["heartbeat_at"]) if kv.get("heartbeat_at") else None
    state = kv.get("state") or "unknown"
    running = (state == "running" and pid is not None and _pid_alive(pid)
               and seen is not None and now - seen < DAEMON_STALE_AFTER)
    info = {"running": running, "pid": pid if running else None,
            "state": state if running or state == "stopped" else "not running (no heartbeat)",
            "last_seen": _iso(seen)}
    for r in conn.execute("SELECT key, state, error, summary, updated_at FROM daemon_sides"):
        try:
            summary = json.loads(r["summary"] or "{}")
        except ValueError:
            summary = {}
        sides[r["key"]] = {"state": r["state"], "error": r["error"],
                           "transfers": transfers_of(summary)}
    return info, sides


def transfers_of(summary: dict) -> list[dict]:
    """In-flight transfers with progress, when a Side's summary() lists them under the
    optional `transfers` key ([{"path", "done", "size"}]); [] otherwise."""
    out = []
    for t in summary.get("transfers") or []:
        try:
            out.append({"path": str(t["path"]), "done": int(t.get("done") or 0),
                        "size": int(t["size"]) if t.get("size") is not None else None})
        except (KeyError, TypeError, ValueError):
            continue
    return out




def normalize(direction: str, raw: dict) -> dict[str, Any]:
    """The two engines' `summarize` dicts -> the one stable per-mapping shape."""
    problems = raw.get("problems")
    if problems is None:
        problems = raw.get("failures", [])
    out = {
        "queued": int(raw.get("queued") or 0),
        "active": int(raw.get("active") or 0),
        "failed": int(raw.get("failed") or 0),
        "done_today": int(raw.get("done_today") or 0),
        "last_success": raw.get("last_success"),
        "problems": [
            {"path": p.get("path"), "status": p.get("status"), "error": p.get("error"),
             "attempts": p.get("attempts")}
            for p in problems
        ],
    }
    return out


def collect(config: Config, conn: sqlite3.Connection | None, now: float | None = None) -> dict:
    from cfbox_watch.incoming import state as in_state
    from cfbox_watch.outgoing import state as out_state

    daemon, sides = read_daemon(conn, now)
    mappings = []
    entries = [("out", m, m.kind) for m in config.outgoing] + \
              [("in", m, "post_production") for m in config.incoming]
    for direction, m, kind in entries:
        if conn is None:
            raw: dict = {}
        elif direction == "out":
            raw = out_state.summarize(conn, m.name)
        else:
            raw = in_state.summarize(conn, m.name)
        side = sides.get(f"{m.name}:{direction}", {}) if daemon["running"] else {}
        item = {"name": m.name, "direction": direction, "kind": kind,
                "connection": m.connection, "local": str(m.local), "folder_id": m.folder_id,
                "state": side.get("state") or "not running", "error": side.get("error"),
                "transfers": side.get("transfers", [])}
        item.update(normalize(direction, raw))
        mappings.append(item)
    connections = []
    for name in config.connections:
        mine = [x for x in mappings if x["connection"] == name]
        errors = [x["error"] for x in mine if x["state"] in ("failed", "error") and x["error"]]
        retrying = [p["error"] for x in mine for p in x["problems"]
                    if p.get("status") == "pending" and p.get("error")]
        if errors:
            health, message = "error", errors[0]
        elif retrying and daemon["running"]:
            health, message = "degraded", f"{len(retrying)} item(s) waiting to retry: {retrying[0]}"
        elif daemon["running"] and mine:
            health, message = "ok", None
        else:
            health, message = "unknown", None if daemon["running"] else "daemon not running"
        connections.append({"name": name, "health": health, "message": message})
    return {
        "version": JSON_VERSION,
        "config": str(config.path),
        "state_db": str(dbmod.db_path(config.state_dir)),
        "generated_at": _iso(time.time() if now is None else now),
        "daemon": daemon,
        "mappings": mappings,
        "connections": connections,
        "round_trip": _round_trip(config, conn, now, sides if daemon["running"] else {}),
    }


def _round_trip(config: Config, conn: sqlite3.Connection | None, now: float | None,
                sides: dict[str, dict]) -> list[dict]:
    """Creative Force round trip per post_production entry (docs/creative-force.md),
    with the state of its `<entry>:cf` Side (which writes the completion logs)."""
    if not config.creative_force:
        return []
    from cfbox_watch.creative_force.engine import report

    out = []
    for cf in config.creative_force:
        item = report(conn, cf, time.time() if now is None else now)
        side = sides.get(f"{cf.name}:cf", {})
        item["state"], item["error"] = side.get("state") or "not running", side.get("error")
        out.append(item)
    return out


def _when(iso: str | None) -> str:
    if not iso:
        return "never"
    try:
        t = _dt.datetime.fromisoformat(iso).astimezone()
    except ValueError:
        return iso
    return t.strftime("%Y-%m-%d %H:%M:%S")


def render_text(report: dict) -> str:
    d = report["daemon"]
    lines = [
        f"daemon: {'running, pid ' + str(d['pid']) if d['running'] else d['state']}"
        + (f" (last seen {_when(d['last_seen'])})" if d["last_seen"] else ""),
        f"state:  {report['state_db']}",
        "",
    ]
    arrow = {"out": "->", "in": "<-"}
    for m in report["mappings"]:
        where = f"{m['local']} {arrow[m['direction']]} Box folder {m['folder_id']}"
        lines.append(f"{m['name']} ({'outgoing' if m['direction'] == 'out' else 'incoming'}): {where}")
        lines.append(f"  {m['queued']} queued, {m['active']} active, {m['done_today']} done today, "
                     f"{m['failed']} failed; last success {_when(m['last_success'])}; {m['state']}")
        if m["error"]:
            lines.append(f"  STOPPED: {m['error']}")
        for t in m["transfers"]:
            if t["size"]:
                pct = 100 * t["done"] // max(1, t["size"])
                lines.append(f"  {'sending' if m['direction'] == 'out' else 'receiving'} {t['path']}: "
                             f"{pct}% ({t['done'] / 1e6:.1f} of {t['size'] / 1e6:.1f} MB)")
            else:
                lines.append(f"  {'sending' if m['direction'] == 'out' else 'receiving'} {t['path']}")
        for p in m["problems"][:10]:
            reason = (p.get("error") or "").splitlines()[0] if p.get("error") else ""
            lines.append(f"  {p.get('status')}: {p.get('path')}" + (f": {reason}" if reason else ""))
        if len(m["problems"]) > 10:
            lines.append(f"  ... and {len(m['problems']) - 10} more (status --json lists them)")
    for rtp in report.get("round_trip", []):
        lines.append(f"{rtp['name']} (round trip): {rtp['sent']} sent, {rtp['returned']} returned, "
                     f"{rtp['outstanding']} outstanding, {rtp['rejected']} rejected"
                     + (f", {rtp['overdue']} overdue" if rtp.get("overdue") else "")
                     + (f", {rtp['invalid_returns']} invalid returns" if rtp.get("invalid_returns") else "")
                     + (f"; oldest outstanding {rtp['oldest_outstanding_age'] / 3600:.1f} h"
                        if rtp.get("oldest_outstanding_age") is not None else ""))
        if rtp.get("error"):
            lines.append(f"  STOPPED: {rtp['error']}")
        for b in rtp["batches"][:20]:
            logged = b.get("completion_log")
            lines.append(f"  {b['batch'] or '(top level)'}: {b['sent']} sent, {b['returned']} returned, "
                         f"{b['outstanding']} outstanding, {b['rejected']} rejected"
                         + (f"; log {logged['name']} ({logged['files']} files)" if logged else ""))
    lines.append("")
    for c in report["connections"]:
        lines.append(f"connection {c['name']}: {c['health']}" + (f": {c['message']}" if c["message"] else ""))
    return "\n".join(lines)


def _open_readonly(config: Config) -> sqlite3.Connection | None:
    path = dbmod.db_path(config.state_dir)
    if not path.exists():
        return None
    try:
        return dbmod.open_db(path, readonly=True)
    except sqlite3.Error as e:
        raise UserError(f"cannot read the state database {path}: {e} "
                        "(run status as the service user, or with sudo)") from e


def cmd_status(args) -> int:
    from cfbox_watch.config import load_config

    config = load_config(args.config)
    conn = _open_readonly(config)
    try:
        report = collect(config, conn)
    except sqlite3.Error as e:
        raise UserError(f"cannot read the state database {dbmod.db_path(config.state_dir)}: {e}") from e
    finally:
        if conn is not None:
            conn.close()
    if getattr(args, "json", False):
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(render_text(report))
    return 0


def cmd_retry(args) -> int:
    from cfbox_watch.config import load_config
    from cfbox_watch.incoming import state as in_state
    from cfbox_watch.outgoing import state as out_state

    config = load_config(args.config)
    mapping = getattr(args, "mapping", None)
    names = config.mapping_names()
    if mapping is not None and mapping not in names:
        raise UserError(f"retry: no mapping named {mapping!r} in {config.path}; "
                        f"known: {', '.join(names) or 'none'}")
    paths = [p.strip("/") for p in (getattr(args, "paths", None) or [])]
    path = dbmod.db_path(config.state_dir)
    if not path.exists():
        print(f"nothing to retry: no state database yet at {path}")
        return 0
    conn = dbmod.open_db(path)
    try:
        out_n = out_state.requeue_failed(conn, mapping, paths)
        in_n = in_state.requeue_failed(conn, mapping, paths)
    finally:
        conn.close()
    total = out_n + in_n
    scope = f" in {mapping}" if mapping else ""
    print(f"requeued {total} item{'s' if total != 1 else ''}{scope} "
          f"({out_n} outgoing, {in_n} incoming); the running daemon picks them up"
          if total else f"nothing failed{scope}" + (" among the given paths" if paths else ""))
    return 0

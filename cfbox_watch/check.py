"""`cfbox-watch check [--offline]`: is this machine ready to run the daemon?

The person running this is a studio admin setting up a Box app for the first time,
usually with the Box Admin Console open in another window.  So every failure is
turned into the one setup step to fix, in the words of those consoles, and the
checks go on after a failure so that one run lists everything that is wrong.

The decisions (which folders to check and how, which advice fits which Box error)
are plain functions over plain data, testable without Box; `cmd_check` only
performs the calls and prints.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cfbox_watch.config import load_config, read_jwt_config
from cfbox_watch.config_model import Config
from cfbox_watch.errors import (
    EX_CONFIG,
    EX_OK,
    EX_UNAVAILABLE,
    BoxError,
    ConfigError,
    NameConflictError,
    RetryableError,
    SetupError,
)

PROBE_NAME = ".cfbox-watch-check"   # preflight only: nothing is ever created


@dataclass(frozen=True)
class FolderCheck:
    """One Box folder a mapping relies on, and whether the app must write there."""

    connection: str
    key_path: str          # e.g. "post_production[0].upload_folder_id"
    mapping: str
    role: str              # "upload" | "delivery" | "rejection" | "download" | "archive" | "invalid"
    folder_id: str
    needs_write: bool


def folder_checks(config: Config) -> dict[str, list[FolderCheck]]:
    """Per connection, every folder to confirm, each folder id once per role.

    Upload and delivery folders need write access; a download folder needs it only
    when files are trashed or moved after download; an archive folder always does.
    """
    out: dict[str, list[FolderCheck]] = {name: [] for name in config.connections}
    for m in config.outgoing:
        key, role = _FOLDER_KEY[m.kind]
        out.setdefault(m.connection, []).append(
            FolderCheck(m.connection, f"{m.key_path}.{key}", m.name, role, m.folder_id, True))
    for m in config.incoming:
        out.setdefault(m.connection, []).append(
            FolderCheck(m.connection, f"{m.key_path}.download_folder_id", m.name, "download",
                        m.folder_id, m.after_download != "keep"))
        if m.after_download == "move" and m.archive_folder_id:
            out[m.connection].append(
                FolderCheck(m.connection, f"{m.key_path}.archive_folder_id", m.name, "archive",
                            m.archive_folder_id, True))
        if m.invalid_folder_id:
            out[m.connection].append(
                FolderCheck(m.connection, f"{m.key_path}.invalid_folder_id", m.name, "invalid",
                            m.invalid_folder_id, True))
    for checks in out.values():
        checks.sort(key=_file_order)
    return out


# Which YAML keys an outgoing half came from, by OutgoingMapping.kind: (folder id key,
# role), and the local folder key.
_FOLDER_KEY = {"post_production": ("upload_folder_id", "upload"),
               "delivery": ("folder_id", "delivery"),
               "rejection": ("rejection_folder_id", "rejection")}
_LOCAL_KEY = {"post_production": "outgoing", "delivery": "source", "rejection": "rejected"}
_ROLE_ORDER = {"upload": 0, "delivery": 0, "rejection": 1, "download": 2, "archive": 3, "invalid": 4}


def _file_order(fc: FolderCheck) -> tuple:
    """post_production before delivery, entries in file order, as the admin wrote them."""
    section, _, rest = fc.key_path.partition("[")
    index = int(rest.split("]", 1)[0]) if rest else 0
    return (section != "post_production", index, _ROLE_ORDER.get(fc.role, 9))


# ------------------------------------------------------------------------- advice
# Each rule: (OAuth/API error code or None, lower-case texts of which the message must
# contain one, or None; HTTP status or None; advice).  First match wins, so rules go from
# specific to general.  The texts cover both Box's own error_description and the Box
# adapter's rewording of it.
# Placeholders: {login} service account login, {folder} folder id, {client_id} app id.

_KEY_PAIR = ("The app's key pair does not match: the public key ID or private key in the "
             "config.json is not one Box knows for this app (removed or regenerated?). In the "
             "Box Developer Console open the app > Configuration > Add and Manage Public Keys, "
             "generate a new key pair and install the downloaded config.json here.")
_CLOCK = ("This computer's clock is wrong, so Box rejects the sign-in (JWT 'exp' claim). "
          "Turn on time sync: `timedatectl set-ntp true` (then check `timedatectl status`).")

ADVICE: list[tuple[str | None, tuple[str, ...] | None, int | None, str]] = [
    ("unauthorized_client", None, None,
     "The app is not authorized in your Box enterprise. A Box admin must open the Admin "
     "Console > Apps > Platform Apps Manager > Server Authentication Apps > Add App and enter "
     "the client ID {client_id}. After any change to the app's scopes, re-authorize it there."),
    ("invalid_client", None, None,
     "Box rejected the app's client ID or client secret: {config} is out of date (was "
     "the client secret reset?). Download the app's config.json again from the Box Developer "
     "Console (Configuration) and replace it."),
    ("invalid_grant", ("'exp'", "expiration", "clock"), None, _CLOCK),
    ("invalid_grant", ("kid", "signature", "public key", "publickeyid"), None, _KEY_PAIR),
    ("invalid_grant", ("'sub'", "enterpriseid", "enterprise id"), None,
     "Box does not accept the enterprise ID in the config.json (JWT 'sub' claim): the file is "
     "for another enterprise, or the app is not authorized in this one. Check `enterpriseID` "
     "against Admin Console > Account & Billing, and authorize the app (client ID {client_id}) "
     "in Admin Console > Apps > Platform Apps Manager."),
    ("invalid_grant", None, None,
     "Box refused the app's sign-in (JWT). Download a fresh config.json from the Box Developer "
     "Console and check that the app is authorized in the Admin Console."),
    (None, None, 404,
     "The folder is not shared with the app's service account (or does not exist). In Box, "
     "open the folder, choose Share > Invite People and invite {login} as Editor on folder "
     "{folder}."),
    (None, None, 403,
     "The app may not write here. Either the service account's role is too low: invite "
     "{login} as Editor on folder {folder}; or the app lacks the 'Write all files and folders "
     "stored in Box' scope: enable it in the Developer Console (Configuration > Application "
     "Scopes), then have the admin re-authorize the app (client ID {client_id})."),
    (None, None, 401,
     "Box no longer accepts the app's token: the app was disabled or needs re-authorization "
     "in the Admin Console > Apps > Platform Apps Manager (client ID {client_id})."),
]


def advice_for(code: str | None, message: str, status: int | None, *, login: str = "",
               folder: str = "", client_id: str = "", config: str = "") -> str | None:
    """The admin's next step for a Box error, or None when no rule fits."""
    text = (message or "").lower()
    for rule_code, needle, rule_status, advice in ADVICE:
        if rule_code is not None and rule_code != code:
            continue
        if needle is not None and not any(n in text for n in needle):
            continue
        if rule_status is not None and rule_status != status:
            continue
        return advice.format(login=login or "the app's service account",
                             folder=folder or "?", client_id=client_id or "(see config.json)",
                             config=config or "the app's config.json")
    return None


def describe_error(err: BaseException, **kw: str) -> str:
    if isinstance(err, BoxError):
        advice = advice_for(err.code, str(err), err.status, **kw)
        if advice:
            return advice
        if isinstance(err, RetryableError):
            return (f"Box could not be reached or is busy ({err}); check the network, proxy "
                    "and base_url, then run check again.")
        return str(err)     # the adapter's own message, already in the admin's words
    return f"{err}"


# ------------------------------------------------------------------------- local checks

def local_problems(config: Config) -> list[str]:
    """Things on this machine the daemon will need: a writable state folder, readable
    outgoing folders, writable incoming folders (missing ones are already warnings)."""
    out: list[str] = []
    sd = config.state_dir
    probe = sd if sd.exists() else next((p for p in sd.parents if p.exists()), Path("/"))
    if not os.access(probe, os.W_OK | os.X_OK):
        out.append(f"state_dir: {sd} is not writable by this user (uid {os.getuid()}); "
                   "under systemd use StateDirectory=cfbox-watch, else chown it to the service user")
    for m in config.outgoing:
        key = f"{m.key_path}.{_LOCAL_KEY[m.kind]}"
        if m.local.is_dir() and not os.access(m.local, os.R_OK | os.X_OK):
            out.append(f"{key}: {m.local} is not readable by this user")
        elif m.local.is_dir() and m.after_upload != "keep" and not os.access(m.local, os.W_OK):
            out.append(f"{key}: {m.local} is not writable, but after_upload: {m.after_upload} "
                       "must remove files from it")
    for m in config.incoming:
        if m.local.is_dir() and not os.access(m.local, os.W_OK | os.X_OK):
            out.append(f"{m.key_path}.incoming: {m.local} is not writable by this user")
    return out


# ------------------------------------------------------------------------- the command

def cmd_check(args) -> int:
    out: Callable[[str], None] = lambda line: print(line, flush=True)  # noqa: E731
    config = load_config(args.config)     # ConfigError -> exit 78 in cli.py
    for w in config.warnings:
        out(f"warning: {w}")
    n_maps = len(config.mapping_names())
    out(f"configuration {config.path}: valid ({len(config.connections)} connection(s), "
        f"{n_maps} mapping(s))")
    problems = [f"problem: {p}" for p in local_problems(config)]
    for p in problems:
        out(p)
    if getattr(args, "offline", False):
        return EX_CONFIG if problems else EX_OK

    from cfbox_watch.box_adapter import BoxRemote   # lazy: offline checks need no SDK

    setup_failures = len(problems)
    unreachable = 0
    for conn_name, checks in folder_checks(config).items():
        conn = config.connections[conn_name]
        client_id = _client_id(conn)
        try:
            remote = BoxRemote.from_connection(conn)
            me = remote.whoami()
        except (BoxError, ConfigError) as e:
            if isinstance(e, ConfigError):
                advice = "; ".join(e.problems)
            else:
                advice = describe_error(e, client_id=client_id, config=str(conn.jwt_config))
            out(f"connection {conn_name}: FAILED to sign in to Box: {advice}")
            if checks:
                out(f"connection {conn_name}: skipped {len(checks)} folder check(s)")
            if isinstance(e, RetryableError) and not _is_setup(e):
                unreachable += 1
            else:
                setup_failures += 1
            continue
        login = str(me.get("login") or me.get("id") or "the service account")
        out(f"connection {conn_name}: signed in as {login} ({me.get('name', '')}, "
            f"user id {me.get('id', '?')})")
        for fc in checks:
            kw = dict(login=login, folder=fc.folder_id, client_id=client_id,
                      config=str(conn.jwt_config))
            label = f"{fc.key_path} ({fc.mapping}, {fc.role} folder {fc.folder_id})"
            try:
                folder = remote.get_folder(fc.folder_id)
                if folder.type != "folder":
                    raise SetupError(f"item {fc.folder_id} is a {folder.type}, not a folder",
                                     status=400, code="not_a_folder")
                if fc.needs_write:
                    try:
                        remote.preflight(fc.folder_id, PROBE_NAME, 1)
                    except NameConflictError:
                        pass     # the probe name exists there: writing is allowed
                access = ", writable" if fc.needs_write else ""
                out(f"{label}: OK, {folder.name!r}{access}")
            except BoxError as e:
                if isinstance(e, RetryableError) and not _is_setup(e):
                    unreachable += 1
                else:
                    setup_failures += 1
                out(f"{label}: FAILED: {describe_error(e, **kw)}")
        if conn.webhooks is not None:
            bad, down = check_webhooks(conn, config, remote, out)
            setup_failures += bad
            unreachable += down
    if setup_failures or unreachable:
        print(f"cfbox-watch: check found {setup_failures + unreachable} problem(s); "
              "fix them and run `cfbox-watch check` again", file=sys.stderr)
        return EX_CONFIG if setup_failures else EX_UNAVAILABLE
    out("all checks passed")
    return EX_OK


def _is_setup(err: BoxError) -> bool:
    """A token error can surface as retryable from a generic layer; its OAuth code
    still says that only an admin can fix it."""
    return err.code in ("unauthorized_client", "invalid_client", "invalid_grant")


def _client_id(conn) -> str:
    try:
        return str(read_jwt_config(conn)["boxAppSettings"]["clientID"])
    except (ConfigError, KeyError, TypeError):
        return ""


def probe_public_url(url: str, timeout: float = 10.0) -> str | None:
    """None when `url` answers as cfbox-watch's webhook receiver, else what went wrong."""
    import json
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers={"User-Agent": "cfbox-watch check"}),
                                    timeout=timeout) as r:
            payload = r.read(4096)
    except urllib.error.HTTPError as e:
        return f"answered HTTP {e.code}, not cfbox-watch's receiver"
    except (OSError, ValueError) as e:
        return f"does not answer ({getattr(e, 'reason', None) or e})"
    try:
        if json.loads(payload).get("service") == "cfbox-watch webhooks":
            return None
    except (ValueError, AttributeError):
        pass
    return "answers, but not as cfbox-watch's receiver (another site or a proxy page)"


def check_webhooks(conn, config: Config, remote, out: Callable[[str], None]) -> tuple[int, int]:
    """Keys present, public URL reaches a receiver, and the webhooks on each Download
    folder; returns (setup problems, unreachable).  When the daemon is not running, a
    receiver is started on `listen` for the probe, so the proxy path is checked before
    the first start."""
    from cfbox_watch.webhooks.receiver import WebhookReceiver
    from cfbox_watch.webhooks.service import signature_keys

    s = conn.webhooks
    label = f"connections.{conn.name}.webhooks"
    bad = down = 0
    try:
        keys = signature_keys(conn)
    except ConfigError as e:
        out(f"{label}: FAILED: {'; '.join(e.problems)}")
        keys = (None, None)
    names = [n for n, k in zip(("primary", "secondary"), keys) if k]
    if names:
        out(f"{label}: signature key(s) present: {' and '.join(names)}")
    else:
        bad += 1
        out(f"{label}: FAILED: config.json has no webhooks.primaryKey or secondaryKey; copy them from the "
            "Developer Console (your app > Webhooks > Manage signature keys)")
    import shutil
    import tempfile

    temporary = None
    scratch = Path(tempfile.mkdtemp(prefix="cfbox-check-"))   # never create state_dir as another user
    try:
        temporary = WebhookReceiver(s.listen_host, s.listen_port, label="check", keys=lambda: keys,
                                    db_path=scratch / "webhooks.sqlite3", on_notice=lambda n: False)
        temporary.start()
    except OSError:
        temporary = None    # the daemon (or something else) listens there already
    try:
        problem = probe_public_url(s.public_url)
    finally:
        if temporary is not None:
            temporary.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    if problem is None:
        out(f"{label}.public_url: OK, {s.public_url} reaches the receiver on {s.listen_host}:{s.listen_port}")
    else:
        down += 1
        out(f"{label}.public_url: FAILED: {s.public_url} {problem}; the reverse proxy must forward it "
            f"(TLS ended there) to {s.listen_host}:{s.listen_port}")
    try:
        hooks = remote.list_webhooks()
    except BoxError as e:
        bad += 1
        out(f"{label}: FAILED to list webhooks: {describe_error(e)} (the app needs the 'Manage webhooks' "
            "scope in the Developer Console)")
        return bad, down
    for m in config.incoming:
        if m.connection != conn.name:
            continue
        on = [w for w in hooks if w.target_type == "folder" and w.target_id == m.folder_id]
        if not on:
            out(f"{m.key_path}.download_folder_id ({m.folder_id}): no webhook yet (the daemon registers it)")
        for w in on:
            mine = "ours" if w.address == s.public_url else "address differs; the daemon will update it"
            out(f"{m.key_path}.download_folder_id ({m.folder_id}): webhook {w.id} -> {w.address} "
                f"[{', '.join(w.triggers)}] ({mine})")
    return bad, down


"""Running webhooks for the daemon: one receiver per connection with `webhooks:`,
registration on that connection's Download folders, and routing each notice to the
incoming side that watches the folder.

The daemon calls `sync(daemon)` after start and after every reload, and `stop(daemon)`
first thing on shutdown.  Nothing here can stop a mapping: a port in use, missing
keys or a Box error only mean no webhooks, and the listing and long-poll still find
every file."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from cfbox_watch.config_model import Config, Connection, WebhookSettings
from cfbox_watch.db import db_path, open_db
from cfbox_watch.errors import BoxError, CfboxError, RetryableError
from cfbox_watch.webhooks import registration, state
from cfbox_watch.webhooks.receiver import Notice, WebhookReceiver

log = logging.getLogger("cfbox_watch.webhooks")

RETRY_CAP = 300.0


def signature_keys(conn: Connection) -> tuple[str | None, str | None]:
    """(primaryKey, secondaryKey) from the connection's config.json; never logged."""
    from cfbox_watch.config import read_jwt_config

    hooks = read_jwt_config(conn).get("webhooks") or {}
    if not isinstance(hooks, dict):
        return None, None

    def key(name):
        v = hooks.get(name)
        return v if isinstance(v, str) and v.strip() else None

    return key("primaryKey"), key("secondaryKey")


@dataclass
class _Endpoint:
    connection: Connection
    settings: WebhookSettings
    receiver: WebhookReceiver | None
    keys: tuple[str | None, str | None]
    folders: dict[str, str] = field(default_factory=dict)     # folder_id -> mapping name
    routes: dict[str, str] = field(default_factory=dict)      # webhook_id -> folder_id
    stop: threading.Event = field(default_factory=threading.Event)
    generation: int = 0


class WebhookService:
    def __init__(self, state_dir, find_side: Callable[[str], object | None]):
        self.db_path = db_path(state_dir)
        self.find_side = find_side
        self.endpoints: dict[str, _Endpoint] = {}
        self.lock = threading.Lock()

    # -- routing --------------------------------------------------------------------
    def _route(self, ep: _Endpoint, notice: Notice) -> bool:
        folder = ep.routes.get(notice.webhook_id or "")
        mappings = [ep.folders[folder]] if folder in ep.folders else list(ep.folders.values())
        taken = False
        for mapping in mappings:
            side = self.find_side(f"{mapping}:in")
            request = getattr(side, "request_scan", None)
            if request is None:
                continue
            # The parent of the changed item is the folder to list; an unknown one makes
            # the incoming side list its whole Download folder, which is never wrong.
            request({notice.parent_id} if notice.parent_id else None)
            taken = True
        return taken

    # -- lifecycle -------------------------------------------------------------------
    def sync(self, config: Config, remote_for: Callable[[Connection], object]) -> None:
        wanted: dict[str, dict[str, str]] = {}
        for m in config.incoming:
            conn = config.connections.get(m.connection)
            if conn is not None and conn.webhooks is not None:
                wanted.setdefault(conn.name, {})[m.folder_id] = m.name
        removing: set[str] = set()
        with self.lock:
            for name in list(self.endpoints):
                ep = self.endpoints[name]
                conn = config.connections.get(name)
                if conn is None or conn.webhooks is None or conn.webhooks != ep.settings or conn != ep.connection:
                    self._close(ep)
                    del self.endpoints[name]
                    if conn is not None and conn.webhooks is not None and conn.webhooks.public_url == ep.settings.public_url:
                        continue  # re-opened below with the new settings; webhooks stay
                    if conn is not None:
                        # webhooks switched off (or moved): take ours away from Box
                        self._register_async(ep, {}, remote_for(conn), ep.settings.public_url, once=True)
                        removing.add(name)
                    else:
                        log.warning("connection %s was removed; its webhooks stay on Box until removed "
                                    "there (Developer Console or `cfbox-watch check` lists them)", name)
            for name, folders in wanted.items():
                conn = config.connections[name]
                ep = self.endpoints.get(name)
                if ep is None:
                    ep = self._open(conn)
                    if ep is None:
                        continue
                    self.endpoints[name] = ep
                else:
                    try:
                        ep.keys = signature_keys(conn)   # a reload picks up rotated keys
                    except CfboxError as e:
                        log.error("connections.%s.webhooks: %s", name, e)
                ep.folders = dict(folders)
                self._register_async(ep, folders, remote_for(conn), conn.webhooks.public_url)
            for name in [n for n in self.endpoints if n not in wanted]:
                # webhooks configured but no incoming mapping left on this connection
                ep = self.endpoints.pop(name)
                self._close(ep)
                self._register_async(ep, {}, remote_for(config.connections[name]), ep.settings.public_url,
                                     once=True)
                removing.add(name)
            for name, conn in config.connections.items():
                # the last Download mapping (or `webhooks:`) went away while the daemon was
                # stopped: webhooks this install recorded are removed at the next start
                if name not in wanted and name not in self.endpoints and name not in removing \
                        and self._recorded(name):
                    self._remove_recorded(conn, remote_for(conn))

    def _open(self, conn: Connection) -> _Endpoint | None:
        s = conn.webhooks
        try:
            keys = signature_keys(conn)
        except CfboxError as e:
            log.error("connections.%s.webhooks: %s; webhooks are off, polling continues", conn.name, e)
            return None
        if not any(keys):
            log.error("connections.%s.webhooks: the app's config.json has no webhooks.primaryKey or "
                      "secondaryKey; webhooks are off, polling continues", conn.name)
            return None
        holder: list[_Endpoint] = []
        try:
            receiver = WebhookReceiver(s.listen_host, s.listen_port, label=conn.name,
                                       keys=lambda: holder[0].keys, db_path=self.db_path,
                                       on_notice=lambda n: self._route(holder[0], n))
        except OSError as e:
            log.error("connections.%s.webhooks.listen: cannot listen on %s:%d (%s); webhooks are off, "
                      "polling continues", conn.name, s.listen_host, s.listen_port, e.strerror or e)
            return None
        ep = _Endpoint(conn, s, receiver, keys)
        holder.append(ep)
        receiver.start()
        host, port = receiver.address
        log.info("webhooks for %s: listening on %s:%d for %s", conn.name, host, port, s.public_url)
        return ep

    def _close(self, ep: _Endpoint) -> None:
        ep.stop.set()
        if ep.receiver is None:
            return
        try:
            ep.receiver.stop()
        except Exception:
            log.exception("stopping the webhook receiver of %s", ep.connection.name)

    def stop(self) -> None:
        with self.lock:
            for ep in self.endpoints.values():
                self._close(ep)
            self.endpoints.clear()

    # -- registration --------------------------------------------------------------------
    def _recorded(self, connection: str) -> bool:
        return connection in recorded_connections(self.db_path)

    def _remove_recorded(self, conn: Connection, remote) -> None:
        settings = conn.webhooks or WebhookSettings("", "", 0)
        ep = _Endpoint(conn, settings, None, (None, None))  # no receiver: removal only
        self._register_async(ep, {}, remote, settings.public_url, once=True)

    def _register_async(self, ep: _Endpoint, folders: dict[str, str], remote, address: str,
                        once: bool = False) -> None:
        ep.generation += 1
        gen = ep.generation
        stop = threading.Event() if once else ep.stop

        def run():
            delay = 2.0
            failures = 0
            while not stop.is_set() and (once or gen == ep.generation):
                try:
                    routes = self.register(ep.connection.name, folders, remote, address)
                    if not once:
                        ep.routes = routes
                    return
                except BoxError as e:
                    failures += 1
                    if failures in (1, 5) or failures % 20 == 0:
                        log.warning("webhooks for %s: registering on Box failed: %s; retrying in %.0f s "
                                    "(polling finds new files meanwhile)", ep.connection.name, e, delay)
                    if once and not isinstance(e, RetryableError) and failures >= 3:
                        return
                    stop.wait(delay)
                    delay = min(RETRY_CAP, delay * 2)
                except Exception:
                    log.exception("webhooks for %s: registration failed", ep.connection.name)
                    return

        threading.Thread(target=run, name=f"webhooks-register:{ep.connection.name}", daemon=True).start()

    def register(self, connection: str, folders: dict[str, str], remote, address: str) -> dict[str, str]:
        """One synchronous registration pass (plan + apply); webhook_id -> folder_id."""
        conn = open_db(self.db_path)
        try:
            state.ensure(conn)
            ours = {f: r["webhook_id"] for f, r in state.registrations(conn, connection).items()}
            actions = registration.plan(folders, address, registration.TRIGGERS, remote.list_webhooks(), ours)
            return registration.apply(
                remote, actions, address, registration.TRIGGERS,
                record=lambda f, w, m: state.save_registration(conn, connection, f, w, address, m),
                forget=lambda f: state.drop_registration(conn, connection, f))
        finally:
            conn.close()


# -- the daemon's three calls ------------------------------------------------------------

def recorded_connections(path) -> set[str]:
    """Connections with webhooks this install registered; read-only, and without
    creating the tables in installs that never used webhooks."""
    import sqlite3

    if not Path(path).exists():
        return set()
    try:
        conn = open_db(path, readonly=True)
    except sqlite3.Error:
        return set()
    try:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name='webhook_registrations'").fetchone() is None:
            return set()
        return {r[0] for r in conn.execute("SELECT DISTINCT connection FROM webhook_registrations")}
    except sqlite3.Error:
        return set()
    finally:
        conn.close()


def sync(daemon) -> None:
    svc = getattr(daemon, "_webhook_service", None)
    if svc is None:
        if not any(c.webhooks for c in daemon.config.connections.values()) and not (
                set(daemon.config.connections) & recorded_connections(db_path(daemon.config.state_dir))):
            return
        svc = WebhookService(daemon.config.state_dir, lambda key: daemon.sides.get(key))
        daemon._webhook_service = svc
    try:
        svc.sync(daemon.config, daemon._remote_for)
    except Exception:  # webhooks are an accelerator: never take the daemon down
        log.exception("webhooks: sync failed; polling continues")


def stop(daemon) -> None:
    svc = getattr(daemon, "_webhook_service", None)
    if svc is not None:
        svc.stop()

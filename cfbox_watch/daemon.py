"""`cfbox-watch run` and `cfbox-watch once`: builds the Sides from the config and runs them.

The daemon owns no transfer logic.  It turns the config into Sides (one outgoing and/or
incoming Side per mapping, one BoxRemote per connection so its rate limiter is shared),
and it is the only part that talks to systemd: READY=1 when every Side is ready, STATUS=
kept current, WATCHDOG=1 only while the main loop runs and every Side's heartbeat is
healthy, RELOADING=1/READY=1 around a SIGHUP reload, STOPPING=1 on SIGTERM/SIGINT.

Signals only write a byte to a self-pipe (signal.set_wakeup_fd); the main loop reads it
and does the work, so a signal never interrupts a transaction or a half-built Side.

The queue lives in the state DB, so stopping a Side (reload, shutdown) loses nothing: a
new Side for the same mapping picks up what the old one left queued.
"""

from __future__ import annotations

import concurrent.futures
import datetime as _dt
import json
import logging
import os
import select
import signal
import socket
import sys
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

from cfbox_watch import db as dbmod
from cfbox_watch.config_model import Config, Connection, IncomingMapping, OutgoingMapping
from cfbox_watch.errors import (EX_CONFIG, EX_FAILURE, EX_OK, EX_TEMPFAIL, CfboxError, ConfigError,
                                RetryableError, SetupError)
from cfbox_watch.log import setup_logging, set_level
from cfbox_watch.notify import Notifier
from cfbox_watch.webhooks import service as webhooks

log = logging.getLogger("cfbox_watch.daemon")

STATUS_EVERY = 2.0          # seconds between STATUS= / status-table refreshes
HEARTBEAT_EVERY = 10.0      # heartbeat check cadence when systemd's watchdog is off
READY_TIMEOUT_AFTER_RELOAD = 120.0
# A mapping stopped by a setup error (folder not shared yet, app not authorized) is
# restarted this often, so an admin's fix in Box takes effect without a reload.
RESTART_STOPPED_EVERY = 300.0

# Test hook (documented in tests/test_daemon.py): "METHOD[,METHOD...]" makes those
# BoxRemote methods block forever, so a real worker of a real engine hangs inside a Box
# call and the daemon must stop the watchdog pings.  Never set in production.
HANG_ENV = "CFBOX_TEST_HANG_REMOTE"


class Side(Protocol):
    name: str
    mapping: str

    def start(self) -> None: ...
    def ready(self) -> bool: ...
    def request_stop(self) -> None: ...
    def join(self, timeout: float) -> bool: ...
    def run_once(self) -> bool: ...
    def heartbeat(self) -> bool: ...
    def summary(self) -> dict: ...


# ---------------------------------------------------------------- plain decisions


@dataclass(frozen=True)
class SideSpec:
    """What a Side is built from; two equal specs give interchangeable Sides."""

    key: str                        # "<mapping>:out" | "<mapping>:in"
    direction: str                  # "out" | "in" | "cf" (Creative Force work)
    mapping: OutgoingMapping | IncomingMapping
    connection: Connection
    state_dir: str


def side_specs(config: Config) -> dict[str, SideSpec]:
    specs: dict[str, SideSpec] = {}
    for m in config.outgoing:
        specs[f"{m.name}:out"] = SideSpec(f"{m.name}:out", "out", m,
                                          config.connections[m.connection], str(config.state_dir))
    for m in config.incoming:
        specs[f"{m.name}:in"] = SideSpec(f"{m.name}:in", "in", m,
                                         config.connections[m.connection], str(config.state_dir))
    for cf in config.creative_force:  # completion logs + round trip (docs/creative-force.md)
        specs[f"{cf.name}:cf"] = SideSpec(f"{cf.name}:cf", "cf", cf,
                                          config.connections[cf.connection], str(config.state_dir))
    return specs


@dataclass(frozen=True)
class ReloadPlan:
    stop: tuple[str, ...]    # running Sides to stop (removed or changed)
    start: tuple[str, ...]   # Sides to build and start (added or changed)
    keep: tuple[str, ...]    # untouched

    def is_noop(self) -> bool:
        return not self.stop and not self.start


def plan_reload(old: dict[str, SideSpec], new: dict[str, SideSpec]) -> ReloadPlan:
    """A changed mapping, connection or state_dir restarts that Side; the rest keep running."""
    stop = sorted(k for k in old if k not in new or new[k] != old[k])
    start = sorted(k for k in new if k not in old or new[k] != old[k])
    keep = sorted(k for k in new if k in old and new[k] == old[k])
    return ReloadPlan(tuple(stop), tuple(start), tuple(keep))


def _fmt_when(iso: str | None) -> str:
    if not iso:
        return "never"
    try:
        when = _dt.datetime.fromisoformat(str(iso).replace("Z", "+00:00")).astimezone()
    except ValueError:
        return str(iso)
    today = _dt.datetime.now().astimezone().date()
    return when.strftime("%H:%M:%S" if when.date() == today else "%Y-%m-%d %H:%M")


def _latest(a: str | None, b: str | None) -> str | None:
    if not a or not b:
        return a or b
    return max(a, b)


def status_text(summaries: dict[str, dict]) -> str:
    """The one-line STATUS=: per mapping queued/active/failed and last success."""
    per: dict[str, dict[str, Any]] = {}
    for key, s in summaries.items():
        mapping = key.rsplit(":", 1)[0]
        agg = per.setdefault(mapping, {"queued": 0, "active": 0, "failed": 0, "last": None,
                                       "errors": []})
        for n in ("queued", "active", "failed"):
            try:
                agg[n] += int(s.get(n) or 0)
            except (TypeError, ValueError):
                pass
        agg["last"] = _latest(agg["last"], s.get("last_success"))
        if s.get("state") in ("error", "stopped", "failed") and s.get("error"):
            agg["errors"].append(str(s["error"]).splitlines()[0][:80])
    parts = []
    for mapping, a in per.items():
        text = (f"{mapping}: {a['queued']} queued, {a['active']} active, {a['failed']} failed, "
                f"last {_fmt_when(a['last'])}")
        if a["errors"]:
            text += f" (STOPPED: {a['errors'][0]})"
        parts.append(text)
    return "; ".join(parts) if parts else "no mappings configured"


# ---------------------------------------------------------------- building Sides


def build_remote(conn: Connection):
    from cfbox_watch.box_adapter import BoxRemote

    remote = BoxRemote.from_connection(conn)
    hang = os.environ.get(HANG_ENV, "").strip()
    if hang:
        remote = _HangingRemote(remote, {m.strip() for m in hang.split(",") if m.strip()})
    return remote


class _HangingRemote:
    """Test hook only (see HANG_ENV): the named methods never return."""

    def __init__(self, inner, methods: set[str]):
        self._inner = inner
        self._methods = methods
        self._forever = threading.Event()

    def __getattr__(self, name):
        attr = getattr(self._inner, name)
        if name in self._methods:
            def hang(*_a, **_kw):
                log.warning("test hook %s: %s() blocks forever", HANG_ENV, name)
                self._forever.wait()
            return hang
        return attr


def build_side(config: Config, spec: SideSpec, remote) -> Side:
    if spec.direction == "cf":
        from cfbox_watch.creative_force.engine import CreativeForceSide

        return CreativeForceSide(config, spec.mapping, remote)
    if spec.direction == "out":
        from cfbox_watch.outgoing.engine import OutgoingSide

        return OutgoingSide(config, spec.mapping, remote)
    from cfbox_watch.incoming.engine import IncomingSide

    return IncomingSide(config, spec.mapping, remote)


def _safe(fn: Callable[[], Any], default: Any, what: str) -> Any:
    try:
        return fn()
    except Exception:
        log.exception("%s failed", what)
        return default


# ---------------------------------------------------------------- the daemon's status table

DAEMON_MIGRATIONS = [
    """
    CREATE TABLE daemon_sides (
        key TEXT PRIMARY KEY,
        mapping TEXT NOT NULL,
        direction TEXT NOT NULL,
        connection TEXT NOT NULL,
        state TEXT,
        error TEXT,
        summary TEXT,
        updated_at REAL NOT NULL
    );
    CREATE TABLE daemon_info (key TEXT PRIMARY KEY, value TEXT)
    """,
]


def write_daemon_state(conn: sqlite3.Connection, pid: int | None, specs: dict[str, SideSpec],
                       summaries: dict[str, dict], *, state: str = "running") -> None:
    """What `status` shows about the running daemon (pid, heartbeat, each Side's state)."""
    now = time.time()
    with dbmod.transaction(conn):
        conn.execute("DELETE FROM daemon_sides")
        for key, spec in specs.items():
            s = summaries.get(key, {})
            conn.execute(
                "INSERT INTO daemon_sides(key, mapping, direction, connection, state, error, summary, "
                "updated_at) VALUES(?,?,?,?,?,?,?,?)",
                (key, spec.mapping.name, spec.direction, spec.connection.name,
                 str(s.get("state") or "unknown"), s.get("error") and str(s.get("error")),
                 json.dumps(s, default=str), now))
        for k, v in (("pid", "" if pid is None else str(pid)), ("state", state),
                     ("heartbeat_at", repr(now))):
            conn.execute("INSERT INTO daemon_info(key, value) VALUES(?, ?) "
                         "ON CONFLICT(key) DO UPDATE SET value=excluded.value", (k, v))


# ---------------------------------------------------------------- signals


class SignalInbox:
    """Self-pipe for signals: the handlers do nothing, the C-level handler writes the
    signal number to the pipe, the main loop reads it in `wait`."""

    def __init__(self, signums: Iterable[int]):
        self.r, self.w = socket.socketpair()
        self.r.setblocking(False)
        self.w.setblocking(False)
        self.old_fd = signal.set_wakeup_fd(self.w.fileno(), warn_on_full_buffer=False)
        self.old = {s: signal.signal(s, self._noop) for s in signums}

    @staticmethod
    def _noop(signum, frame) -> None:
        pass

    def wait(self, timeout: float) -> list[int]:
        ready, _, _ = select.select([self.r], [], [], max(0.0, timeout))
        if not ready:
            return []
        try:
            data = self.r.recv(64)
        except BlockingIOError:
            return []
        return list(data)

    def close(self) -> None:
        signal.set_wakeup_fd(self.old_fd)
        for s, h in self.old.items():
            signal.signal(s, h)
        self.r.close()
        self.w.close()


# ---------------------------------------------------------------- run


@dataclass
class Daemon:
    config: Config
    notifier: Notifier
    verbose: bool = False
    make_remote: Callable[[Connection], Any] = build_remote
    make_side: Callable[[Config, SideSpec, Any], Side] = build_side
    specs: dict[str, SideSpec] = field(default_factory=dict)
    sides: dict[str, Side] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)   # key -> why it could not start
    remotes: dict[str, tuple[Connection, Any]] = field(default_factory=dict)
    ready_pending: bool = True
    ready_deadline: float | None = None
    hung: tuple[str, ...] = ()
    stragglers: tuple[str, ...] = ()
    state_conn: sqlite3.Connection | None = None
    state_path: Any = None

    # -- Sides
    def _remote_for(self, conn: Connection):
        known = self.remotes.get(conn.name)
        if known is not None and known[0] == conn:
            return known[1]
        remote = self.make_remote(conn)
        self.remotes[conn.name] = (conn, remote)
        return remote

    def start_sides(self, keys: Iterable[str], specs: dict[str, SideSpec]) -> list[CfboxError]:
        errors: list[CfboxError] = []
        for key in keys:
            spec = specs[key]
            try:
                side = self.make_side(self.config, spec, self._remote_for(spec.connection))
                side.start()
            except CfboxError as e:
                log.error("%s cannot start: %s", key, e,
                          extra={"fields": {"MAPPING": spec.mapping.name, "ACTION": "failed"}})
                self.broken[key] = str(e)
                errors.append(e)
                continue
            self.sides[key] = side
            self.broken.pop(key, None)
            log.info("%s started", key, extra={"fields": {"MAPPING": spec.mapping.name}})
        return errors

    def stop_sides(self, keys: Iterable[str], grace: float) -> list[str]:
        """request_stop all at once, then join within one shared grace; returns the stragglers."""
        keys = [k for k in keys if k in self.sides]
        for k in keys:
            _safe(self.sides[k].request_stop, None, f"{k}: request_stop")
        deadline = time.monotonic() + grace
        late = []
        for k in keys:
            done = _safe(lambda: self.sides[k].join(max(0.0, deadline - time.monotonic())), False,
                         f"{k}: join")
            if not done:
                late.append(k)
            self.sides.pop(k, None)
        for k in keys:
            self.broken.pop(k, None)
        return late

    def summaries(self) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for key in self.specs:
            side = self.sides.get(key)
            if side is None:
                out[key] = ({"state": "error", "error": self.broken[key]} if key in self.broken
                            else {"state": "stopped", "error": None})
            else:
                out[key] = _safe(side.summary, {"state": "unknown", "error": "summary() failed"},
                                 f"{key}: summary") or {}
        return out

    def all_ready(self) -> bool:
        """Every Side ready, or stopped for good (setup error): those must not hold back the rest."""
        for key, side in self.sides.items():
            if _safe(side.ready, False, f"{key}: ready"):
                continue
            s = _safe(side.summary, {}, f"{key}: summary") or {}
            if s.get("state") in ("error", "stopped", "failed"):
                continue
            return False
        return True

    def stopped_by_error(self) -> list[str]:
        """Sides that stopped themselves on a setup error (not on a bug: those need a person)."""
        out = []
        for key, side in self.sides.items():
            st = _safe(side.summary, {}, f"{key}: summary") or {}
            if st.get("state") in ("failed", "error") and not str(st.get("error") or "").startswith(
                    "internal error"):
                out.append(key)
        return out

    def restart_stopped(self) -> None:
        keys = self.stopped_by_error()
        broken = [k for k in self.broken if k in self.specs and k not in self.sides]
        if not keys and not broken:
            return
        log.info("retrying stopped mapping(s) %s (a set-up fix may have happened)",
                 ", ".join(keys + broken))
        self.stop_sides(keys, 1.0)
        self.start_sides(keys + broken, self.specs)

    def check_heartbeats(self) -> tuple[str, ...]:
        return tuple(k for k, s in self.sides.items() if not _safe(s.heartbeat, False, f"{k}: heartbeat"))

    # -- state table for `status`
    def persist(self, state: str = "running") -> None:
        try:
            path = dbmod.db_path(self.config.state_dir)
            if self.state_conn is not None and self.state_path != path:  # state_dir reloaded
                self.state_conn.close()
                self.state_conn = None
            if self.state_conn is None:
                self.state_conn = dbmod.open_db(path)
                self.state_path = path
                dbmod.ensure_schema(self.state_conn, "daemon", DAEMON_MIGRATIONS)
            write_daemon_state(self.state_conn, os.getpid() if state != "stopped" else None,
                               self.specs, self.summaries(), state=state)
        except sqlite3.Error as e:
            log.warning("could not record daemon status in the state DB: %s", e)

    # -- lifecycle
    def start(self) -> int | None:
        self.specs = side_specs(self.config)
        errors = self.start_sides(list(self.specs), self.specs)
        webhooks.sync(self)  # docs/webhooks.md; never fatal
        if self.specs and not self.sides:
            # Nothing can run: exit with the most telling code so systemd does not loop on
            # a setup mistake (RestartPreventExitStatus=78).
            codes = [e.exit_code for e in errors]
            return EX_CONFIG if EX_CONFIG in codes else (codes[0] if codes else EX_FAILURE)
        self.persist()
        return None

    def reload(self) -> None:
        self.notifier.reloading()
        log.info("reloading %s", self.config.path)
        from cfbox_watch.config import load_config

        try:
            new = load_config(self.config.path)
        except ConfigError as e:
            for line in e.problems:
                log.error("reload rejected: %s", line)
            log.error("the new configuration is invalid; still running the previous one "
                      "(fix the lines above, then `systemctl reload cfbox-watch`)")
            self.notifier.ready(status_text(self.summaries()))
            return
        except CfboxError as e:
            log.error("reload rejected: %s; still running the previous configuration", e)
            self.notifier.ready(status_text(self.summaries()))
            return
        new_specs = side_specs(new)
        # Sides that could not start or stopped on a setup error are retried on every reload.
        stopped = set(self.stopped_by_error())
        old_specs = {k: v for k, v in self.specs.items() if k not in self.broken and k not in stopped}
        late0 = self.stop_sides([k for k in stopped if k in self.sides], 1.0)
        for key in late0:
            log.warning("%s: its old threads are still ending", key)
        plan = plan_reload(old_specs, new_specs)
        set_level(new.log_level, verbose=self.verbose)
        for key in plan.stop:
            log.info("%s: %s; stopping it (its queue stays in the state DB)", key,
                     "removed" if key not in new_specs else "changed")
        late = self.stop_sides(plan.stop, self.config.shutdown_grace)
        for key in late:
            log.warning("%s: still finishing a transfer after %.0f s; it ends in the background",
                        key, self.config.shutdown_grace)
        for key in list(self.broken):
            if key not in new_specs:
                self.broken.pop(key)
        self.config = new
        self.specs = new_specs
        for name in [n for n in self.remotes if n not in new.connections]:
            self.remotes.pop(name)
        self.start_sides(plan.start, new_specs)
        webhooks.sync(self)
        log.info("reloaded: %d started, %d stopped, %d unchanged",
                 len(plan.start), len(plan.stop), len(plan.keep))
        self.ready_pending = True
        self.ready_deadline = time.monotonic() + READY_TIMEOUT_AFTER_RELOAD
        self.persist()

    def shutdown(self, signame: str) -> int:
        self.notifier.stopping()
        webhooks.stop(self)  # stop taking deliveries first; Box retries them
        grace = self.config.shutdown_grace
        log.info("%s: stopping; in-flight transfers get %.0f s, everything else stays queued",
                 signame, grace)
        late = self.stop_sides(list(self.sides), grace)
        self.persist("stopped")
        if self.state_conn is not None:
            self.state_conn.close()
            self.state_conn = None
        if late:
            log.warning("still busy after %.0f s: %s; their work stays queued and resumes at the "
                        "next start", grace, ", ".join(late))
        log.info("stopped")
        self.stragglers = tuple(late)
        return EX_OK

    def loop(self, inbox: SignalInbox) -> int:
        wd = self.notifier.watchdog_interval
        tick = min(0.5, wd) if wd else 0.5
        next_wd = time.monotonic()
        next_hb = time.monotonic() + HEARTBEAT_EVERY
        next_status = 0.0
        started = time.monotonic()
        next_restart = started + RESTART_STOPPED_EVERY
        while True:
            for signum in inbox.wait(tick):
                if signum in (signal.SIGTERM, signal.SIGINT):
                    return self.shutdown(signal.Signals(signum).name)
                if signum == signal.SIGHUP:
                    self.reload()
                    next_status = 0.0
            now = time.monotonic()
            if self.ready_pending:
                late = self.ready_deadline is not None and now > self.ready_deadline
                if self.all_ready() or late:
                    if late:
                        log.warning("some mappings are still not ready after the reload; "
                                    "reporting ready anyway")
                    self.ready_pending = False
                    self.ready_deadline = None
                    text = status_text(self.summaries())
                    self.notifier.ready(text)
                    log.info("ready (%.1f s): %s", now - started, text)
                    started = now
            if (wd and now >= next_wd) or (not wd and now >= next_hb):
                hung = self.check_heartbeats()
                if hung != self.hung:
                    if hung:
                        log.error("no progress in %s; %s", ", ".join(hung),
                                  "withholding watchdog pings so systemd restarts the service"
                                  if wd else "restart the service if it stays stuck")
                    else:
                        log.info("all workers healthy again")
                    self.hung = hung
                if wd and not hung:
                    self.notifier.watchdog()
                next_wd = now + (wd or 0)
                next_hb = now + HEARTBEAT_EVERY
            if now >= next_status:
                self.notifier.status(status_text(self.summaries()))
                self.persist()
                next_status = now + STATUS_EVERY
            if now >= next_restart:
                self.restart_stopped()
                next_restart = now + RESTART_STOPPED_EVERY


def state_db_problem(path) -> str | None:
    """Why the state DB cannot be used (damaged, not SQLite), or None.

    Checked once before any Side starts: otherwise every worker thread meets the damage
    on its own and dies with an internal error, and the daemon keeps running with no
    working mapping and no advice."""
    from pathlib import Path

    path = Path(path)
    if not path.exists():
        return None
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            row = conn.execute("PRAGMA quick_check(1)").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        return str(e)
    if row is not None and row[0] != "ok":
        return str(row[0])
    return None


def refuse_damaged_state(config: Config) -> int | None:
    path = dbmod.db_path(config.state_dir)
    problem = state_db_problem(path)
    if problem is None:
        return None
    log.error("the state DB %s is damaged (%s). Move it aside (mv %s %s.damaged, and its -wal/-shm "
              "files) and start again: cfbox-watch rebuilds its state by comparing the local folders "
              "with Box, without duplicating any file on Box or locally", path, problem, path, path)
    return EX_CONFIG


def _start_command(args) -> tuple[Config | None, int | None]:
    """What `run` and `once` both do first: load the config (ConfigError -> exit 78 in
    cli.py), set up logging, log the config's warnings, refuse a damaged state DB."""
    from cfbox_watch.config import load_config

    config = load_config(args.config)
    setup_logging(config.log_level, verbose=getattr(args, "verbose", False))
    for w in config.warnings:
        log.warning("%s", w)
    refused = refuse_damaged_state(config)
    return (None, refused) if refused is not None else (config, None)


def cmd_run(args) -> int:
    config, refused = _start_command(args)
    if config is None:
        return refused
    notifier = Notifier()
    inbox = SignalInbox([signal.SIGHUP, signal.SIGTERM, signal.SIGINT])
    daemon = Daemon(config, notifier, verbose=getattr(args, "verbose", False))
    try:
        log.info("cfbox-watch starting: %s (%d mappings)", config.path, len(config.mapping_names()))
        code = daemon.start()
        if code is not None:
            log.error("no mapping could start; exiting")
            return code
        code = daemon.loop(inbox)
    finally:
        inbox.close()
    if daemon.stragglers or any(t.is_alive() for t in threading.enumerate()
                                if t is not threading.main_thread()):
        # Threads still alive after the grace (a transfer, an event long-poll): their rows
        # stay queued and claims are released at the next start, so leave without waiting,
        # and before interpreter teardown can make a dying daemon thread print noise.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


# ---------------------------------------------------------------- once


def once_exit_code(outcomes: dict[str, str]) -> int:
    """'ok' | 'failed' | 'unreachable' | 'setup' per Side -> the process exit code."""
    values = set(outcomes.values())
    if "setup" in values:
        return EX_CONFIG
    if "unreachable" in values:
        return EX_TEMPFAIL
    if "failed" in values:
        return EX_FAILURE
    return EX_OK


def classify_failure(summary: dict, probe: Callable[[], Any] | None) -> str:
    """Why a run_once returned False: 'setup', 'unreachable' or 'failed'.

    A Side that stopped itself (state failed/error) did so for a setup error unless it
    says it hit an internal error.  Otherwise one cheap Box call tells "Box unreachable"
    (exit 75, try again later) from "some items failed" (exit 1).
    """
    state = str(summary.get("state") or "")
    error = str(summary.get("error") or "")
    if state in ("failed", "error") and error and not error.startswith("internal error"):
        return "setup"
    if probe is not None:
        try:
            probe()
        except RetryableError:
            return "unreachable"
        except SetupError:
            return "setup"
        except CfboxError:
            return "failed"
    return "failed"


def cmd_once(args) -> int:
    config, refused = _start_command(args)
    if config is None:
        return refused
    specs = side_specs(config)
    daemon = Daemon(config, Notifier({}))
    outcomes: dict[str, str] = {}
    sides: dict[str, Side] = {}
    for key, spec in specs.items():
        try:
            sides[key] = build_side(config, spec, daemon._remote_for(spec.connection))
        except SetupError as e:
            log.error("%s: %s", key, e)
            outcomes[key] = "setup"
        except ConfigError:
            raise
        except CfboxError as e:
            log.error("%s: %s", key, e)
            outcomes[key] = "unreachable" if isinstance(e, RetryableError) else "failed"

    def run_mapping(keys: list[str]) -> dict[str, str]:
        result = {}
        for key in keys:
            side = sides[key]
            try:
                ok = side.run_once()
                if ok:
                    result[key] = "ok"
                else:
                    remote = daemon._remote_for(specs[key].connection)
                    result[key] = classify_failure(_safe(side.summary, {}, "summary") or {},
                                                   getattr(remote, "whoami", None))
            except SetupError as e:
                log.error("%s: %s", key, e)
                result[key] = "setup"
            except RetryableError as e:
                log.error("%s: Box unreachable: %s", key, e)
                result[key] = "unreachable"
            except CfboxError as e:
                log.error("%s: %s", key, e)
                result[key] = "failed"
        return result

    by_mapping: dict[str, list[str]] = {}
    for key in sides:
        # an entry's halves run in order (out, its "<entry>/rejection" half, in, then the
        # ":cf" Side that reads what they did)
        by_mapping.setdefault(key.rsplit(":", 1)[0].split("/")[0], []).append(key)

    stop = threading.Event()

    def on_term(signum, frame):
        if not stop.is_set():
            stop.set()
            for s in sides.values():
                s.request_stop()

    old = signal.signal(signal.SIGTERM, on_term)
    old_int = signal.signal(signal.SIGINT, on_term)  # Ctrl-C: same orderly stop
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(by_mapping))) as pool:
            for result in pool.map(run_mapping, by_mapping.values()):
                outcomes.update(result)
    finally:
        signal.signal(signal.SIGTERM, old)
        signal.signal(signal.SIGINT, old_int)
    for key, s in daemon_summaries(sides).items():
        log.info("%s: %s; %s queued, %s failed, %s done today", key, outcomes.get(key, "?"),
                 s.get("queued", 0), s.get("failed", 0), s.get("done_today", 0),
                 extra={"fields": {"MAPPING": key.rsplit(":", 1)[0]}})
    if stop.is_set():
        return EX_FAILURE
    return once_exit_code(outcomes)


def daemon_summaries(sides: dict[str, Side]) -> dict[str, dict]:
    return {k: (_safe(s.summary, {}, f"{k}: summary") or {}) for k, s in sides.items()}

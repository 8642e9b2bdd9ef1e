"""`cfbox-watch demo`: the whole product in one minute, with no Box account.

It starts the local Box emulator and the real daemon (`cfbox-watch run`) as two
subprocesses in a scratch folder, exports sample photos into a vendor's outgoing folder
and a client's delivery folder, lets the "vendor" return retouched versions into the Box
Download folder, and narrates each file as it moves.

The demo plays systemd for the daemon: it owns the NOTIFY_SOCKET (so it sees READY=1,
STATUS= and the watchdog pings) and the journal socket (so it reads the daemon's
structured log records: MAPPING, ACTION, PATH, SIZE, DURATION_MS).  That way it shows
exactly what an admin would see in `journalctl`, and it never parses log text.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from cfbox_watch.errors import UserError
from cfbox_watch.log import JOURNAL_SOCKET_ENV, decode_journal

VENDOR = "acme-retouch"
CLIENT = "brand-final"
EXPORTS = ["look-01.png", "look-02.png", "detail/look-03.png"]
FINALS = ["brand-hero.png", "brand-banner.png"]
STARTUP_TIMEOUT = 60.0


# ---------------------------------------------------------------- sample images


def png_bytes(width: int, height: int, seed: int, *, invert: bool = False) -> bytes:
    """A small, valid RGB PNG (a colour gradient), written without an imaging library."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter: none
        for x in range(width):
            r = (x * 255 // max(1, width - 1) + seed * 40) % 256
            g = (y * 255 // max(1, height - 1) + seed * 90) % 256
            b = (seed * 70 + (x ^ y)) % 256
            if invert:
                r, g, b = 255 - r, 255 - g, 255 - b
            rows += bytes((r, g, b))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(rows), 9))
            + chunk(b"IEND", b""))


def _write_atomically(path: Path, data: bytes) -> None:
    # Like a photo app's export: write a temporary, then rename into place.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# ---------------------------------------------------------------- talking like systemd


class Listener:
    """A datagram socket the daemon sends to; received payloads go to a queue."""

    def __init__(self, path: Path, kind: str, inbox: "queue.Queue[tuple[str, bytes]]"):
        self.path = path
        self.kind = kind
        self.inbox = inbox
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"demo-{kind}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import array

        while not self.closed.is_set():
            try:
                fds = array.array("i")
                data, anc, _f, _a = self.sock.recvmsg(1 << 20, socket.CMSG_SPACE(4 * fds.itemsize))
            except socket.timeout:
                continue
            except OSError:
                return
            for level, typ, cdata in anc:  # big records arrive as a memfd
                if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                    fds.frombytes(cdata[: len(cdata) - len(cdata) % fds.itemsize])
            for fd in fds:
                with os.fdopen(fd, "rb") as f:
                    f.seek(0)
                    data = f.read()
            self.inbox.put((self.kind, data))

    def close(self) -> None:
        self.closed.set()
        self.sock.close()
        self.thread.join(2)


# ---------------------------------------------------------------- the show


@dataclass
class Tally:
    uploaded: dict[str, set] = field(default_factory=lambda: {VENDOR: set(), CLIENT: set()})
    downloaded: set = field(default_factory=set)
    returned: set = field(default_factory=set)
    problems: list = field(default_factory=list)
    watchdog_pings: int = 0
    status: str = ""


def say(text: str = "") -> None:
    print(text, flush=True)


def _size(n: str | None) -> str:
    try:
        v = int(n or 0)
    except ValueError:
        return ""
    return f"{v / 1000:.1f} KB" if v < 1_000_000 else f"{v / 1_000_000:.1f} MB"


def _ms(v: str | None) -> str:
    try:
        return f"{float(v or 0):.0f} ms"
    except ValueError:
        return ""


def _start_emulator(root: Path, log_file) -> tuple[subprocess.Popen, dict]:
    cmd = [sys.executable, "-m", "cfbox_watch", "emulator", "--port", "0",
           "--data", str(root / "emulator"), "--write-config", str(root / "config.json")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log_file, text=True,
                            start_new_session=True)
    lines: "queue.Queue[str | None]" = queue.Queue()

    def pump():
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, name="demo-emulator-out", daemon=True).start()
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        if line is None:
            break
        try:
            info = json.loads(line)
        except ValueError:
            continue
        if info.get("event") == "ready":
            return proc, info
    proc.kill()
    proc.wait()
    raise UserError(f"the Box emulator did not start; see {root / 'emulator.log'}")


def write_config(root: Path, info: dict) -> Path:
    folders = info["folders"]
    text = f"""\
# Written by `cfbox-watch demo`: the daemon's configuration for this scratch folder.
state_dir: ./state
settle_time: 1s            # a file must be unchanged this long before it is sent
poll_interval: 3s          # how often Box Download folders are listed (events are faster)
shutdown_grace: 5s
connections:
  emulator:                # one Box app (its Dev Console config.json)
    jwt_config: ./config.json
    base_url: {info['base_url']}
    upload_url: {info['upload_url']}
post_production:           # a retouching vendor: photos go out, retouched ones come back
  - name: {VENDOR}
    connection: emulator
    outgoing: ./studio/outgoing/{VENDOR}
    upload_folder_id: "{folders['upload']}"
    download_folder_id: "{folders['download']}"
    incoming: ./studio/incoming/{VENDOR}
delivery:                  # a client's delivery location: final assets go out
  - name: {CLIENT}
    connection: emulator
    source: ./studio/final/{CLIENT}
    folder_id: "{folders['delivery']}"
"""
    path = root / "cfbox.yaml"
    path.write_text(text)
    return path


def _stop(proc: subprocess.Popen | None, name: str, timeout: float) -> int | None:
    if proc is None or proc.poll() is not None:
        return None if proc is None else proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        say(f"  ({name} did not stop within {timeout:.0f} s; killing it)")
        proc.kill()
        return proc.wait()


def cmd_demo(args) -> int:
    root = Path(args.dir).resolve() if getattr(args, "dir", None) else \
        Path(tempfile.mkdtemp(prefix="cfbox-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    if (root / "cfbox.yaml").exists() or (root / "state").exists():
        raise UserError(f"{root} already holds a demo; pass an empty --dir or leave --dir out")
    duration = getattr(args, "duration", None)
    sockdir = Path(tempfile.mkdtemp(prefix="cfbox-demo-sock-"))  # short path: AF_UNIX limit
    inbox: "queue.Queue[tuple[str, bytes]]" = queue.Queue()
    listeners: list[Listener] = []
    emulator = daemon = None
    stopping = threading.Event()
    tally = Tally()
    t0 = time.monotonic()

    old_int = signal.signal(signal.SIGINT, lambda *_: stopping.set())
    old_term = signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    em_log = open(root / "emulator.log", "w")
    daemon_err = open(root / "daemon.stderr", "w")
    daemon_log = open(root / "daemon.log", "w")
    code = 0
    try:
        say("cfbox-watch demo: a photo studio, a retouching vendor and a client, all on this machine.")
        say(f"Scratch folder: {root}")
        say("")
        say("1. Starting a local Box emulator (it speaks Box's real API; no account needed)...")
        emulator, info = _start_emulator(root, em_log)
        folders = info["folders"]
        say(f"   Box is at {info['base_url']}; the vendor's Upload folder is {folders['upload']}, "
            f"its Download folder {folders['download']}, the client's Delivery folder {folders['delivery']}.")
        cfg = write_config(root, info)
        outgoing = root / "studio" / "outgoing" / VENDOR
        final = root / "studio" / "final" / CLIENT
        for d in (outgoing, final, *{(outgoing / rel).parent for rel in EXPORTS}):
            d.mkdir(parents=True, exist_ok=True)  # the studio's folder layout exists up front
        say(f"2. Starting the daemon with {cfg.relative_to(root)} (the same `cfbox-watch run` systemd starts)...")
        listeners = [Listener(sockdir / "notify", "notify", inbox),
                     Listener(sockdir / "journal", "journal", inbox)]
        st = os.fstat(daemon_err.fileno())
        env = dict(os.environ, NOTIFY_SOCKET=str(sockdir / "notify"), WATCHDOG_USEC="4000000",
                   JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}", PYTHONUNBUFFERED="1")
        env[JOURNAL_SOCKET_ENV] = str(sockdir / "journal")
        env.pop("WATCHDOG_PID", None)
        daemon = subprocess.Popen([sys.executable, "-m", "cfbox_watch", "-c", str(cfg), "run"],
                                  stdout=daemon_err, stderr=daemon_err, stdin=subprocess.DEVNULL,
                                  env=env, cwd=root, start_new_session=True)
        vendor = _vendor(info["base_url"])
        ready = False
        exported = False
        pending_returns: list[tuple[float, str]] = []
        deadline_ready = time.monotonic() + STARTUP_TIMEOUT
        next_export = None
        round_no = 0
        while not stopping.is_set():
            now = time.monotonic()
            if duration is not None and now - t0 >= duration:
                break
            if daemon.poll() is not None:
                say(f"   The daemon exited unexpectedly (code {daemon.returncode}); "
                    f"see {root / 'daemon.log'} and {root / 'daemon.stderr'}.")
                code = 1
                break
            if not ready and now > deadline_ready:
                say(f"   The daemon did not report ready within {STARTUP_TIMEOUT:.0f} s; see {root / 'daemon.log'}.")
                code = 1
                break
            try:
                kind, data = inbox.get(timeout=0.2)
            except queue.Empty:
                kind, data = "", b""
            if kind == "notify":
                for line in data.decode(errors="replace").splitlines():
                    if line == "READY=1" and not ready:
                        ready = True
                        say(f"   The daemon is ready (it told systemd READY=1 after {now - t0:.1f} s): "
                            "watches in place, start-up scan done.")
                    elif line == "WATCHDOG=1":
                        tally.watchdog_pings += 1
                    elif line.startswith("STATUS="):
                        tally.status = line[len("STATUS="):]
            elif kind == "journal":
                rec = decode_journal(data)
                daemon_log.write(_log_line(rec) + "\n")
                daemon_log.flush()
                _narrate(rec, tally, pending_returns, t0)
            if ready and not exported:
                exported = True
                say("")
                say(f"3. The studio exports {len(EXPORTS)} photos for the retoucher into "
                    f"studio/outgoing/{VENDOR}/ and {len(FINALS)} finals for the client into "
                    f"studio/final/{CLIENT}/:")
                for i, rel in enumerate(EXPORTS):
                    _write_atomically(outgoing / rel, png_bytes(96, 64, i))
                    say(f"   studio   exported  {rel}")
                for i, rel in enumerate(FINALS):
                    _write_atomically(final / rel, png_bytes(128, 80, 10 + i))
                    say(f"   studio   exported  {rel}")
                say("   (the daemon waits ~1 s until each file stops changing, then uploads it; "
                    + ("press Ctrl-C to stop)" if duration is None else f"the demo stops after {duration:g} s)"))
                next_export = time.monotonic() + 12
            for due, rel in list(pending_returns):
                if time.monotonic() >= due:
                    pending_returns.remove((due, rel))
                    name = Path(rel).stem + "_retouched.png"
                    i = EXPORTS.index(rel) if rel in EXPORTS else round_no
                    try:
                        vendor.vendor_upload(folders["download"], name, png_bytes(96, 64, i, invert=True))
                        tally.returned.add(name)
                        say(f"   vendor   returned  {name} into the Box Download folder")
                    except Exception as e:  # noqa: BLE001 - the demo reports and goes on
                        say(f"   vendor   could not return {name}: {e}")
            if next_export is not None and time.monotonic() >= next_export and duration is None:
                round_no += 1
                rel = f"look-{round_no + len(EXPORTS):02d}.png"
                _write_atomically(outgoing / rel, png_bytes(96, 64, round_no + 3))
                say(f"   studio   exported  {rel}")
                next_export = time.monotonic() + 12
        if daemon is not None and daemon.poll() is None and ready:
            _show_status(root)
    finally:
        # A second Ctrl-C during the stop is ignored (the handler only sets a flag), so
        # neither subprocess is left behind.
        say("")
        say("4. Stopping: the daemon gets SIGTERM (as from `systemctl stop`), finishes what is in flight, exits.")
        rc = _stop(daemon, "the daemon", 40)
        # Records sent while stopping
        _drain(inbox, tally, daemon_log)
        if rc not in (None, 0):
            say(f"   The daemon exited with code {rc}; see {root / 'daemon.log'}.")
            code = code or 1
        _stop(emulator, "the emulator", 10)
        for lst in listeners:
            lst.close()
        shutil.rmtree(sockdir, ignore_errors=True)
        for f in (em_log, daemon_err, daemon_log):
            f.close()
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
    _summary(root, tally, time.monotonic() - t0)
    return code


def _show_status(root: Path) -> None:
    say("")
    say("   What an admin sees meanwhile with `cfbox-watch -c cfbox.yaml status`:")
    try:
        out = subprocess.run([sys.executable, "-m", "cfbox_watch", "-c", str(root / "cfbox.yaml"),
                              "status"], capture_output=True, text=True, timeout=30,
                             stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        say("   (status did not answer within 30 s)")
        return
    for line in (out.stdout or out.stderr).splitlines():
        say("   | " + line)


def _vendor(base_url: str):
    try:
        from cfbox_watch.emulator.control import EmulatorControl
    except ImportError as e:  # pragma: no cover - the emulator ships with the package
        raise UserError(f"the emulator's control client is missing ({e})") from None
    return EmulatorControl(base_url)


def _drain(inbox, tally: Tally, daemon_log) -> None:
    while True:
        try:
            kind, data = inbox.get(timeout=0.3)
        except queue.Empty:
            return
        if kind == "journal":
            rec = decode_journal(data)
            daemon_log.write(_log_line(rec) + "\n")
            _narrate(rec, tally, [], None)
        elif kind == "notify" and b"WATCHDOG=1" in data:
            tally.watchdog_pings += 1


def _log_line(rec: dict) -> str:
    extras = " ".join(f"{k}={v}" for k, v in rec.items() if k in
                      ("MAPPING", "ACTION", "PATH", "BOX_FILE_ID", "SHA1", "SIZE", "DURATION_MS"))
    return f"<{rec.get('PRIORITY', '6')}> {rec.get('MESSAGE', '')}" + (f"  {extras}" if extras else "")


def _narrate(rec: dict, tally: Tally, pending_returns: list, t0: float | None) -> None:
    action = rec.get("ACTION")
    mapping = rec.get("MAPPING", "")
    path = rec.get("PATH", "")
    detail = ", ".join(x for x in (_size(rec.get("SIZE")), _ms(rec.get("DURATION_MS"))) if x)
    if action == "uploaded" and mapping in tally.uploaded:
        if path in tally.uploaded[mapping]:
            return
        tally.uploaded[mapping].add(path)
        where = "the vendor's Box Upload folder" if mapping == VENDOR else "the client's Box Delivery folder"
        say(f"   daemon   uploaded  {path} -> {where} ({detail}, SHA-1 checked)")
        if mapping == VENDOR and t0 is not None:
            pending_returns.append((time.monotonic() + 1.5, path))
            say(f"   vendor   is retouching {path}...")
    elif action == "downloaded":
        if path in tally.downloaded:
            return
        tally.downloaded.add(path)
        say(f"   daemon   downloaded {path} <- Box Download folder into studio/incoming/{VENDOR}/ "
            f"({detail}, SHA-1 checked)")
    elif action in ("failed", "held", "skipped") or rec.get("PRIORITY") in ("0", "1", "2", "3", "4"):
        tally.problems.append(rec.get("MESSAGE", ""))
        say(f"   daemon   {rec.get('MESSAGE', '')}")


def _summary(root: Path, tally: Tally, elapsed: float) -> None:
    up_v, up_c = len(tally.uploaded[VENDOR]), len(tally.uploaded[CLIENT])
    say("")
    say(f"Summary after {elapsed:.0f} s:")
    say(f"  {up_v} photo(s) sent to the retoucher's Box Upload folder, {up_c} final(s) to the client's "
        f"Delivery folder;")
    say(f"  {len(tally.returned)} retouched file(s) returned by the vendor, {len(tally.downloaded)} of them "
        f"already pulled into studio/incoming/{VENDOR}/.")
    if tally.watchdog_pings:
        say(f"  The daemon pinged the (pretend) systemd watchdog {tally.watchdog_pings} times; "
            f"its last status line: {tally.status or '-'}")
    if tally.problems:
        say(f"  {len(tally.problems)} warning(s)/problem(s) were reported; see {root / 'daemon.log'}.")
    say("")
    say("Look around:")
    say(f"  {root / 'studio'}    the studio's folders")
    say(f"  {root / 'cfbox.yaml'}    the configuration the daemon ran with")
    say(f"  {root / 'daemon.log'}    what the daemon logged (under systemd: journalctl -u cfbox-watch)")
    say(f"  cfbox-watch -c {root / 'cfbox.yaml'} status    what an admin checks first")

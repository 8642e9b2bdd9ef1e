"""Logging for two audiences: the journal (an admin filtering by field) and a terminal.

Under systemd the records go to journald over its native datagram protocol, so that each
file outcome carries MAPPING=, ACTION=, PATH=, BOX_FILE_ID=, SHA1=, SIZE=, DURATION_MS=
as real journal fields (`journalctl -u cfbox-watch MAPPING=acme-retouch`).  The protocol
is small and stable (systemd's "Native Journal Protocol" document), so it is written here
instead of depending on systemd-python (needs libsystemd-dev and a compiler) or cysystemd
(a manylinux_2_34 wheel, i.e. not installable on older studio distributions, and it
hard-codes the socket path so it cannot be tested without a running journald).
When the journal socket cannot be used, records go to stderr with `<N>` priority prefixes,
which journald parses from a service's stderr stream.

On a terminal: short lines (`12:03:04 uploaded shoot/a.jpg  acme-retouch 2.1 MB 340 ms`).

Every record passes a redaction filter last, so a token, client secret, passphrase or
private key that slipped into a message or an exception never reaches a log.
"""

from __future__ import annotations

import array
import errno
import logging
import os
import re
import socket
import sys
import time
from typing import Any, Mapping

JOURNAL_SOCKET = "/run/systemd/journal/socket"
# Test hook: point the native-protocol handler at another datagram socket.
JOURNAL_SOCKET_ENV = "CFBOX_JOURNAL_SOCKET"
IDENTIFIER = "cfbox-watch"

# The structured fields the engines pass in extra={"fields": {...}}, in display order.
KNOWN_FIELDS = ("MAPPING", "ACTION", "PATH", "BOX_FILE_ID", "SHA1", "SIZE", "DURATION_MS")

_FIELD_NAME = re.compile(r"^[A-Z0-9][A-Z0-9_]{0,63}$")

# ---------------------------------------------------------------- redaction

_REDACTIONS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)",
                re.S), "[redacted private key]"),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+"), r"\1 [redacted]"),
    (re.compile(
        r"(?i)(\\?[\"']?\b(?:access_token|refresh_token|id_token|client_secret|clientSecret|"
        r"passphrase|private_key|privateKey|assertion|password|primaryKey|secondaryKey)\b\\?[\"']?"
        r"\s*[:=]\s*)(\\?\"[^\"\\]*\\?\"|'[^']*'|[^\"'\\&\s,}]+)"),
        r"\1[redacted]"),
    # A JWT (header.payload.signature) anywhere, e.g. an assertion echoed in an error.
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"), "[redacted jwt]"),
)


def redact(text: str) -> str:
    """Strip anything that looks like a credential; cheap enough for every record."""
    for pattern, repl in _REDACTIONS:
        text = pattern.sub(repl, text)
    return text


class RedactFilter(logging.Filter):
    """Renders the message (and any traceback) once, redacted, before a handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # a bad format string must not lose the record
            msg = f"{record.msg!r} {record.args!r}"
        record.msg = redact(msg)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
            record.exc_info = None  # formatters would render the raw one again
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            record.fields = {k: redact(str(v)) for k, v in fields.items() if v is not None}
        return True


# ---------------------------------------------------------------- priorities


def syslog_priority(levelno: int) -> int:
    """Python level -> syslog priority (journald PRIORITY=, the `<N>` prefix)."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


def _record_fields(record: logging.LogRecord) -> dict[str, str]:
    fields = getattr(record, "fields", None)
    if not isinstance(fields, Mapping):
        return {}
    out: dict[str, str] = {}
    for key, value in fields.items():
        if value is None:
            continue
        name = str(key).upper()
        if not _FIELD_NAME.match(name):
            continue  # journald drops invalid names; keep the record valid
        out[name] = str(value)
    return out


# ---------------------------------------------------------------- journal native protocol


def journal_fields(record: logging.LogRecord, message: str) -> list[tuple[str, str]]:
    """The (name, value) pairs one record becomes in the journal."""
    pairs = [
        ("MESSAGE", message),
        ("PRIORITY", str(syslog_priority(record.levelno))),
        ("SYSLOG_IDENTIFIER", IDENTIFIER),
        ("LOGGER", record.name),
        ("THREAD_NAME", record.threadName or ""),
        ("CODE_FILE", record.pathname or ""),
        ("CODE_LINE", str(record.lineno)),
        ("CODE_FUNC", record.funcName or ""),
    ]
    reserved = {name for name, _ in pairs}
    for name, value in _record_fields(record).items():
        if name not in reserved:
            pairs.append((name, value))
    return pairs


def encode_journal(pairs: list[tuple[str, str]]) -> bytes:
    """Serialize fields in journald's native format.

    `NAME=value\\n` when the value has no newline; otherwise `NAME\\n`, the value's
    length as 64-bit little endian, the value, `\\n` (the only way to carry a multi-line
    message such as a traceback).
    """
    out = bytearray()
    for name, value in pairs:
        data = value.encode("utf-8", "replace")
        key = name.encode("ascii")
        if b"\n" in data:
            out += key + b"\n" + len(data).to_bytes(8, "little") + data + b"\n"
        else:
            out += key + b"=" + data + b"\n"
    return bytes(out)


def decode_journal(payload: bytes) -> dict[str, str]:
    """Inverse of encode_journal (for tests and for reading a captured datagram)."""
    out: dict[str, str] = {}
    i = 0
    while i < len(payload):
        nl = payload.index(b"\n", i)
        line = payload[i:nl]
        if b"=" in line:
            key, _, value = line.partition(b"=")
            out[key.decode()] = value.decode("utf-8", "replace")
            i = nl + 1
        else:
            size = int.from_bytes(payload[nl + 1:nl + 9], "little")
            start = nl + 9
            out[line.decode()] = payload[start:start + size].decode("utf-8", "replace")
            i = start + size + 1
    return out


class JournalHandler(logging.Handler):
    """Sends each record as one datagram to journald's native socket.

    A record too large for one datagram goes through a sealed memfd passed with
    SCM_RIGHTS, as systemd's own sd_journal_send does.  If the socket goes away, the
    record is written to stderr with a `<N>` prefix so nothing is lost.
    """

    def __init__(self, path: str = JOURNAL_SOCKET, fallback=None):
        super().__init__()
        self.path = path
        self.fallback = fallback if fallback is not None else sys.stderr
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_text:
                message = message + "\n" + record.exc_text
            payload = encode_journal(journal_fields(record, message))
            try:
                self._send(payload)
            except OSError:
                self.fallback.write(prefixed_line(record, message) + "\n")
                self.fallback.flush()
        except Exception:
            self.handleError(record)

    def _send(self, payload: bytes) -> None:
        try:
            self.sock.sendto(payload, self.path)
        except OSError as e:
            if e.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                raise
            fd = os.memfd_create("cfbox-journal", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
            try:
                os.write(fd, payload)
                import fcntl

                fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
                            | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL)
                self.sock.sendmsg([], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                        array.array("i", [fd]))], 0, self.path)
            finally:
                os.close(fd)

    def close(self) -> None:
        try:
            self.sock.close()
        finally:
            super().close()


# ---------------------------------------------------------------- stderr formats


def prefixed_line(record: logging.LogRecord, message: str) -> str:
    """`<N>message k=v ...` for a service's stderr: journald turns <N> into PRIORITY."""
    text = message + _fields_suffix(_record_fields(record), compact=False)
    lines = text.splitlines() or [""]
    prio = syslog_priority(record.levelno)
    return "\n".join(f"<{prio}>{line}" for line in lines)


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"  # pragma: no cover


def _fields_suffix(fields: Mapping[str, str], *, compact: bool) -> str:
    if not fields:
        return ""
    if not compact:
        return "  " + " ".join(f"{k}={_quote(v)}" for k, v in fields.items())
    parts: list[str] = []
    for key, value in fields.items():
        if key == "SIZE":
            try:
                parts.append(human_size(int(value)))
                continue
            except ValueError:
                pass
        if key == "DURATION_MS":
            try:
                ms = float(value)
                parts.append(f"{ms:.0f} ms" if ms < 10_000 else f"{ms / 1000:.1f} s")
                continue
            except ValueError:
                pass
        if key == "SHA1":
            parts.append(f"sha1 {value[:10]}")
            continue
        if key in ("ACTION", "PATH"):
            continue  # engines already say what happened to which path in the message
        if key == "MAPPING":
            parts.append(value)
            continue
        parts.append(f"{key.lower()}={_quote(value)}")
    return ("  [" + ", ".join(parts) + "]") if parts else ""


def _quote(value: str) -> str:
    return f'"{value}"' if (not value or any(c.isspace() for c in value)) else value


class TerminalFormatter(logging.Formatter):
    """Short lines for people watching a terminal; full date when not a terminal."""

    def __init__(self, *, tty: bool):
        super().__init__()
        self.tty = tty

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        t = time.localtime(record.created)
        stamp = time.strftime("%H:%M:%S" if self.tty else "%Y-%m-%d %H:%M:%S", t)
        level = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        text = f"{stamp} {level}{message}{_fields_suffix(_record_fields(record), compact=self.tty)}"
        if record.exc_text:
            text += "\n" + record.exc_text
        return text


class PrefixFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_text:
            message += "\n" + record.exc_text
        return prefixed_line(record, message)


# ---------------------------------------------------------------- choosing


def under_journal(env: Mapping[str, str] | None = None, stream=None) -> bool:
    """True when stderr is journald's stream for this service.

    JOURNAL_STREAM is inherited by children whose stderr may point elsewhere, so the
    dev:inode it names must match our actual stderr (systemd.exec(5) advice).
    """
    env = os.environ if env is None else env
    value = env.get("JOURNAL_STREAM", "")
    if not value or ":" not in value:
        return False
    stream = sys.stderr if stream is None else stream
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    dev, _, ino = value.partition(":")
    return f"{st.st_dev}:{st.st_ino}" == f"{dev}:{ino}"


def choose_mode(env: Mapping[str, str] | None = None, stream=None) -> str:
    """'journal', 'prefix' (journal stream, no native socket) or 'terminal'."""
    env = os.environ if env is None else env
    stream = sys.stderr if stream is None else stream
    if under_journal(env, stream):
        path = env.get(JOURNAL_SOCKET_ENV) or JOURNAL_SOCKET
        return "journal" if os.path.exists(path) else "prefix"
    return "terminal"


_installed: list[logging.Handler] = []


def setup_logging(level: str = "info", *, verbose: bool = False, env: Mapping[str, str] | None = None,
                  stream=None) -> str:
    """Configure the `cfbox_watch` logger tree; returns the mode chosen.

    Idempotent: calling it again (e.g. after a reload changed log_level) replaces the
    handlers instead of doubling every line.
    """
    env = os.environ if env is None else env
    stream = sys.stderr if stream is None else stream
    mode = choose_mode(env, stream)
    if mode == "journal":
        handler: logging.Handler = JournalHandler(env.get(JOURNAL_SOCKET_ENV) or JOURNAL_SOCKET,
                                                  fallback=stream)
    elif mode == "prefix":
        handler = logging.StreamHandler(stream)
        handler.setFormatter(PrefixFormatter())
    else:
        handler = logging.StreamHandler(stream)
        isatty = bool(getattr(stream, "isatty", lambda: False)())
        handler.setFormatter(TerminalFormatter(tty=isatty))
    handler.addFilter(RedactFilter())
    root = logging.getLogger("cfbox_watch")
    for old in _installed:
        root.removeHandler(old)
        old.close()
    _installed[:] = [handler]
    root.addHandler(handler)
    root.propagate = False
    set_level(level, verbose=verbose)
    return mode


def set_level(level: str, *, verbose: bool = False) -> None:
    name = "DEBUG" if verbose else str(level).upper()
    if name == "WARN":
        name = "WARNING"
    numeric = logging.getLevelName(name)
    logging.getLogger("cfbox_watch").setLevel(numeric if isinstance(numeric, int) else logging.INFO)


def fields(**kw: Any) -> dict[str, Any]:
    """`extra=fields(MAPPING=..., ACTION=...)` shorthand for log calls."""
    return {"fields": {k: v for k, v in kw.items() if v is not None}}

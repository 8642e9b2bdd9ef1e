"""Loading and validating the YAML configuration.

A studio admin edits this file by hand, usually over SSH, and the daemon refuses to
start until it is right.  So the validator's job is the message: every problem at
once, each as `FILE:LINE: key.path: what is wrong; what would be right`, never a
traceback and never a secret.  That is why this is a small schema-driven walker over
PyYAML's node tree (which carries line numbers) rather than pydantic: pydantic sees
plain dicts without positions, stops at types, and its wording ("Input should be a
valid integer") would have to be rewritten and re-located for every message anyway.

The Box Dev Console `config.json` files named by `jwt_config` are checked here too
(shape, private key opens with its passphrase, file permissions), because a wrong
key file is the most common set-up mistake and should fail before any Box call.
"""

from __future__ import annotations

import difflib
import grp
import json
import math
import os
import re
import stat
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

import yaml

from cfbox_watch.config_model import (
    DEFAULT_EXCLUDE,
    CompletionLog,
    Config,
    Connection,
    CreativeForce,
    IncomingMapping,
    OutgoingMapping,
    WebhookSettings,
)
from cfbox_watch.errors import ConfigError

CREDENTIAL_PREFIX = "credential:"
DEFAULT_STATE_DIR = "/var/lib/cfbox-watch"
BOX_MIN_SESSION_SIZE = 20_000_000     # Box refuses upload sessions below this
BOX_DIRECT_UPLOAD_MAX = 50_000_000    # Box's advice for direct (multipart) uploads
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_BOX_ID_RE = re.compile(r"^[0-9]{1,20}$")


# --------------------------------------------------------------------------- values

def parse_duration(value: Any) -> float:
    """Seconds from `3s`, `500ms`, `2m`, `1h`, `1d`, `1m30s` or a plain number.

    Raises ValueError with a message meant for the admin.
    """
    if isinstance(value, bool) or value is None:
        raise ValueError("expected a duration such as 3s, 500ms, 2m or 1h")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        try:
            seconds = float(text)
        except ValueError:
            seconds = _parse_duration_units(text, value)
    else:
        raise ValueError("expected a duration such as 3s, 500ms, 2m or 1h")
    if math.isnan(seconds) or math.isinf(seconds):
        raise ValueError("expected a finite duration such as 3s, 500ms, 2m or 1h")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|min|s|m|h|d)\s*")


def _parse_duration_units(text: str, original: str) -> float:
    pos, total, parts = 0, 0.0, 0
    while pos < len(text):
        m = _DURATION_PART.match(text, pos)
        if not m:
            raise ValueError(
                f"{original!r} is not a duration; write a number with a unit "
                "(ms, s, m, h, d), e.g. 3s, 500ms, 2m, 1h or 1m30s"
            )
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
        parts += 1
    if not parts:
        raise ValueError("expected a duration such as 3s, 500ms, 2m or 1h")
    return total


_SIZE_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*$")


def parse_size(value: Any) -> int:
    """Bytes from `50MB` (10^6), `20MiB` (2^20), `1.5GB` or a plain number of bytes."""
    if isinstance(value, bool) or value is None:
        raise ValueError("expected a size such as 50MB, 20MiB or a number of bytes")
    if isinstance(value, int):
        size = value
    elif isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise ValueError("expected a finite size such as 50MB or 20MiB")
        size = int(round(value))
    elif isinstance(value, str):
        m = _SIZE_RE.match(value.lower())
        if not m or m.group(2) not in _SIZE_UNITS:
            raise ValueError(
                f"{value!r} is not a size; write a number with B, KB, MB, GB, TB "
                "(powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024), e.g. 50MB"
            )
        size = int(round(float(m.group(1)) * _SIZE_UNITS[m.group(2)]))
    else:
        raise ValueError("expected a size such as 50MB, 20MiB or a number of bytes")
    if size < 0:
        raise ValueError("a size cannot be negative")
    return size


# --------------------------------------------------------------------------- problems

class _Invalid(Exception):
    """One bad value; the walker turns it into a located problem line."""


@dataclass
class _Ctx:
    file: Path
    base_dir: Path
    problems: list[str]
    warnings: list[str]
    nodes: dict[str, yaml.Node] = field(default_factory=dict)   # key path -> value node

    lines: dict[str, int] = field(default_factory=dict)          # message -> line, for sorting

    def problem(self, node: yaml.Node | None, path: str, message: str) -> None:
        text = self._line(node, path, message)
        if text not in self.problems:
            self.problems.append(text)

    def warn(self, node: yaml.Node | None, path: str, message: str) -> None:
        text = self._line(node, path, message)
        if text not in self.warnings:
            self.warnings.append(text)

    def _line(self, node: yaml.Node | None, path: str, message: str) -> str:
        text = _fmt(self.file, node, path, message)
        self.lines[text] = node.start_mark.line + 1 if node is not None else 0
        return text

    def in_file_order(self, texts: list[str]) -> list[str]:
        """Messages sorted by line, so an admin can walk the file top to bottom."""
        return sorted(texts, key=lambda t: self.lines.get(t, 0))


def _fmt(file: Path, node: yaml.Node | None, path: str, message: str) -> str:
    where = f"{file}:{node.start_mark.line + 1}" if node is not None else f"{file}"
    return f"{where}: {path}: {message}" if path else f"{where}: {message}"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# --------------------------------------------------------------------------- YAML nodes

_FastLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)   # libyaml when present; same marks
_local = threading.local()


def _constructor() -> yaml.SafeLoader:
    """A per-thread SafeLoader used only for its constructor methods (a daemon reload
    may validate in another thread than the first load)."""
    loader = getattr(_local, "loader", None)
    if loader is None:
        loader = _local.loader = yaml.SafeLoader("")
    return loader


def _construct(node: yaml.Node) -> Any:
    loader = _constructor()
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.constructed_objects.clear()   # its cache would pin every node forever


def _scalar(node: yaml.Node) -> Any:
    """The Python value of a scalar node (YAML 1.1 rules, as yaml.safe_load)."""
    if not isinstance(node, yaml.ScalarNode):
        raise _Invalid(f"expected a single value, found a {_kind(node)}")
    return _construct(node)


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "mapping (key: value lines)"
    if isinstance(node, yaml.SequenceNode):
        return "list"
    value = _construct(node)
    if value is None:
        return "empty value"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "number"
    return "text"


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def _mapping(node: yaml.Node, path: str, ctx: _Ctx) -> dict[str, tuple[yaml.Node, yaml.Node]] | None:
    """Keys of a mapping node -> (key node, value node); reports duplicates and bad keys."""
    if not isinstance(node, yaml.MappingNode):
        ctx.problem(node, path, f"expected a mapping of `key: value` lines, found a {_kind(node)}")
        return None
    seen: dict[str, yaml.Node] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
        if key in seen:
            ctx.problem(key_node, _join(path, str(key)),
                        f"key given twice (first on line {seen[key].start_mark.line + 1}); keep one")
        elif key is not None:
            seen[key] = key_node
    try:
        _constructor().flatten_mapping(node)
    except yaml.MarkedYAMLError as e:
        ctx.problem(node, path, f"bad merge key (<<): {e.problem}")
        return None
    out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            ctx.problem(key_node, path, "keys must be plain names, not lists or mappings")
            continue
        out[str(key_node.value)] = (key_node, value_node)
    return out


def _unknown_key(ctx: _Ctx, key_node: yaml.Node, path: str, key: str, known: list[str],
                 hint: str = "") -> None:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if hint:
        advice = hint
    elif close:
        advice = f"did you mean `{close[0]}`?"
    else:
        advice = "known keys here: " + ", ".join(sorted(known))
    ctx.problem(key_node, _join(path, key), f"unknown key; {advice}")


# --------------------------------------------------------------------------- value parsers
# Each takes (value node, ctx) and returns the Python value or raises _Invalid.

Parser = Callable[[yaml.Node, _Ctx], Any]


def p_str(node: yaml.Node, ctx: _Ctx) -> str:
    value = _scalar(node)
    if not isinstance(value, str) or not value.strip():
        raise _Invalid(f"expected text, found a {_kind(node)}")
    return value


def p_name(node: yaml.Node, ctx: _Ctx) -> str:
    value = _scalar(node)
    if isinstance(value, str) and _NAME_RE.match(value):
        return value
    raise _Invalid(
        f"{value!r} is not a usable name; use 1-64 letters, digits, '.', '_' or '-', "
        "starting with a letter or digit (e.g. acme-retouch)"
    )


def p_duration(node: yaml.Node, ctx: _Ctx) -> float:
    try:
        return parse_duration(_scalar(node))
    except ValueError as e:
        raise _Invalid(str(e)) from None


def p_positive_duration(node: yaml.Node, ctx: _Ctx) -> float:
    seconds = p_duration(node, ctx)
    if seconds <= 0:
        raise _Invalid("must be longer than zero, e.g. 1s")
    return seconds


def p_size(node: yaml.Node, ctx: _Ctx) -> int:
    try:
        return parse_size(_scalar(node))
    except ValueError as e:
        raise _Invalid(str(e)) from None


def p_int(low: int, high: int) -> Parser:
    def parse(node: yaml.Node, ctx: _Ctx) -> int:
        value = _scalar(node)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(f"expected a whole number from {low} to {high}, found a {_kind(node)}")
        if not low <= value <= high:
            raise _Invalid(f"{value} is out of range; use a whole number from {low} to {high}")
        return value
    return parse


def p_bool(node: yaml.Node, ctx: _Ctx) -> bool:
    value = _scalar(node)
    if not isinstance(value, bool):
        raise _Invalid(f"expected true or false, found a {_kind(node)}")
    return value


def p_choice(*choices: str) -> Parser:
    def parse(node: yaml.Node, ctx: _Ctx) -> str:
        value = _scalar(node)
        if isinstance(value, str) and value.lower() in choices:
            return value.lower()
        close = difflib.get_close_matches(str(value).lower(), choices, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise _Invalid(f"{value!r} is not allowed{hint}; use one of: {', '.join(choices)}")
    return parse


def p_path(node: yaml.Node, ctx: _Ctx) -> Path:
    value = _scalar(node)
    if not isinstance(value, str) or not value.strip():
        raise _Invalid(f"expected a folder path, found a {_kind(node)}")
    if "\x00" in value:
        raise _Invalid("a path cannot contain a NUL character")
    path = Path(os.path.expanduser(value))
    if not path.is_absolute():
        path = ctx.base_dir / path
    return Path(os.path.normpath(path))


def p_folder_id(allow_root: bool = False) -> Parser:
    def parse(node: yaml.Node, ctx: _Ctx) -> str:
        value = _scalar(node)
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise _Invalid(f'expected a Box folder id such as "1234", found a {_kind(node)}')
        text = str(value).strip()
        from_url = re.search(r"/folder/([0-9]+)", text)
        if from_url and not _BOX_ID_RE.match(text):
            raise _Invalid(f'this is a web address; use just the folder id: "{from_url.group(1)}"')
        if not _BOX_ID_RE.match(text):
            raise _Invalid(
                f"{text!r} is not a Box folder id; use the digits at the end of the folder's "
                'web address (https://app.box.com/folder/1234 -> "1234")'
            )
        if text == "0" and not allow_root:
            raise _Invalid('"0" is the root of All Files, which cannot be mapped; create a '
                           "folder, share it with the app's service account and use its id")
        return text
    return parse


def p_patterns(node: yaml.Node, ctx: _Ctx) -> tuple[str, ...]:
    if isinstance(node, yaml.ScalarNode) and not _is_null(node):
        items = [node]
    elif isinstance(node, yaml.SequenceNode):
        items = node.value
    else:
        raise _Invalid(f'expected a list of glob patterns such as ["*.jpg", "*.tif"], '
                       f"found a {_kind(node)}")
    out = []
    for i, item in enumerate(items):
        value = _scalar(item) if isinstance(item, yaml.ScalarNode) else None
        if not isinstance(value, str) or not value:
            raise _Invalid(f'item {i} is not a glob pattern; quote patterns, e.g. "*.tif"')
        out.append(value)
    return tuple(out)


def p_mode(node: yaml.Node, ctx: _Ctx) -> int:
    if not isinstance(node, yaml.ScalarNode) or _is_null(node):
        raise _Invalid(f"expected an octal permission mode such as 0664, found a {_kind(node)}")
    text = str(node.value).strip().lower()
    if text.startswith("0o"):
        text = text[2:]
    if not re.fullmatch(r"[0-7]{3,4}", text):
        raise _Invalid(f"{node.value!r} is not an octal permission mode; write it like 0664 or 2775")
    return int(text, 8)


def p_group(node: yaml.Node, ctx: _Ctx) -> str:
    value = _scalar(node)
    if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value).strip() == "":
        raise _Invalid(f"expected a group name or number, found a {_kind(node)}")
    text = str(value).strip()
    try:
        if text.isdigit():
            grp.getgrgid(int(text))
        else:
            grp.getgrnam(text)
    except KeyError:
        raise _Invalid(f"group {text!r} does not exist on this machine; create it "
                       f"(groupadd {text}) or name an existing group") from None
    return text


def p_url(node: yaml.Node, ctx: _Ctx) -> str:
    value = _scalar(node)
    if not isinstance(value, str):
        raise _Invalid(f"expected a URL such as https://api.box.com, found a {_kind(node)}")
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise _Invalid(f"{value!r} is not an http(s) URL; e.g. https://api.box.com")
    return value.strip().rstrip("/")


def p_jwt_ref(node: yaml.Node, ctx: _Ctx) -> Path:
    value = _scalar(node)
    if not isinstance(value, str) or not value.strip():
        raise _Invalid("expected the path of the app's config.json "
                       "(or credential:NAME for systemd LoadCredential=)")
    if value.startswith(CREDENTIAL_PREFIX):
        name = value[len(CREDENTIAL_PREFIX):].strip()
        if not name or "/" in name or name in (".", ".."):
            raise _Invalid("credential: needs the credential's name as given to systemd's "
                           "LoadCredential=, e.g. credential:acme-config.json")
        cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
        if not cred_dir:
            raise _Invalid(
                f"{value} needs $CREDENTIALS_DIRECTORY, which is unset: run under systemd with "
                f"LoadCredential={name}:/etc/cfbox/{name} in the unit, or give a file path instead"
            )
        return Path(cred_dir) / name
    return p_path(node, ctx)


# --------------------------------------------------------------------------- schemas
# key -> (parser, default).  `_REQUIRED` marks keys without a default; `_GLOBAL`
# marks defaults taken from the top-level key of the same name.

_REQUIRED = object()
_GLOBAL = object()

TOP_SCHEMA: dict[str, tuple[Parser, Any]] = {
    "state_dir": (p_path, None),
    "settle_time": (p_duration, 3.0),
    "poll_interval": (p_positive_duration, 60.0),
    "workers": (p_int(1, 64), 4),
    "log_level": (p_choice("debug", "info", "warning", "error"), "info"),
    "shutdown_grace": (p_duration, 20.0),
}
TOP_SECTIONS = ("connections", "post_production", "delivery")

CONNECTION_SCHEMA: dict[str, tuple[Parser, Any]] = {
    "jwt_config": (p_jwt_ref, _REQUIRED),
    "base_url": (p_url, None),
    "upload_url": (p_url, None),
    "api_calls_per_minute": (p_int(1, 100_000), 900),
    "uploads_per_minute": (p_int(1, 100_000), 200),
    "connect_timeout": (p_positive_duration, 10.0),
    "read_timeout": (p_positive_duration, 60.0),
}

def p_public_url(node: yaml.Node, ctx: _Ctx) -> str:
    url = p_url(node, ctx)
    parts = urlsplit(url)
    if parts.scheme != "https" and parts.hostname not in ("localhost", "127.0.0.1", "::1"):
        raise _Invalid(f"{url!r}: Box delivers webhooks only to https URLs (port 443, CA-signed "
                       "certificate); give the reverse proxy's https address")
    return url


def p_listen(node: yaml.Node, ctx: _Ctx) -> tuple[str, int]:
    value = _scalar(node)
    text = str(value).strip() if isinstance(value, (str, int)) else ""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise _Invalid(f"{text or value!r} is not host:port; e.g. 127.0.0.1:8470 (the address the "
                       "reverse proxy forwards to)")
    return host, int(port)


WEBHOOKS_SCHEMA: dict[str, tuple[Parser, Any]] = {
    "public_url": (p_public_url, _REQUIRED),
    "listen": (p_listen, _REQUIRED),
}

OUTGOING_SCHEMA: dict[str, tuple[Parser, Any]] = {
    "settle_time": (p_duration, _GLOBAL),
    "rescan_interval": (p_positive_duration, 600.0),
    "watch": (p_choice("auto", "inotify", "poll"), "auto"),
    "include": (p_patterns, ("*",)),
    "exclude": (p_patterns, DEFAULT_EXCLUDE),
    "on_conflict": (p_choice("version", "rename", "skip"), "version"),
    "after_upload": (p_choice("keep", "move", "delete"), "keep"),
    "sent": (p_path, None),
    "workers": (p_int(1, 64), _GLOBAL),
    "chunked_threshold": (p_size, 50 * 1024 * 1024),
    "part_workers": (p_int(1, 16), 3),
    "check_images": (p_bool, True),
}

INCOMING_SCHEMA: dict[str, tuple[Parser, Any]] = {
    "poll_interval": (p_positive_duration, _GLOBAL),
    "long_poll": (p_bool, True),
    "after_download": (p_choice("keep", "trash", "move"), "keep"),
    "archive_folder_id": (p_folder_id(), None),
    "on_local_change": (p_choice("keep_both", "skip", "overwrite"), "keep_both"),
    "file_mode": (p_mode, 0o664),
    "dir_mode": (p_mode, 0o2775),
    "group": (p_group, None),
    "workers": (p_int(1, 64), _GLOBAL),
    "accept": (p_patterns, ("*",)),
    "invalid_folder_id": (p_folder_id(), None),
}

PP_OWN_SCHEMA: dict[str, tuple[Parser, Any]] = {
    "name": (p_name, _REQUIRED),
    "connection": (p_name, None),
    "outgoing": (p_path, None),
    "upload_folder_id": (p_folder_id(), None),
    "download_folder_id": (p_folder_id(), None),
    "incoming": (p_path, None),
    # Creative Force External Post (docs/creative-force.md)
    "rejected": (p_path, None),
    "rejection_folder_id": (p_folder_id(), None),
    "completion_log": (lambda n, c: p_completion_log(n, c), None),
    "match": (p_choice("filename", "filename+folder"), "filename"),
    "return_due": (p_positive_duration, None),
}
CF_KEYS = ("rejected", "rejection_folder_id", "completion_log", "match", "return_due")
DELIVERY_OWN_SCHEMA: dict[str, tuple[Parser, Any]] = {
    "name": (p_name, _REQUIRED),
    "connection": (p_name, None),
    "source": (p_path, _REQUIRED),
    "folder_id": (p_folder_id(), _REQUIRED),
}
PP_SCHEMA = {**PP_OWN_SCHEMA, **OUTGOING_SCHEMA, **INCOMING_SCHEMA}
DELIVERY_SCHEMA = {**DELIVERY_OWN_SCHEMA, **OUTGOING_SCHEMA}


@dataclass
class _Values:
    """Parsed values of one mapping node, with each key's node for messages."""

    values: dict[str, Any]
    nodes: dict[str, yaml.Node]
    node: yaml.Node
    path: str

    def line_node(self, key: str) -> yaml.Node:
        return self.nodes.get(key, self.node)


def _walk(node: yaml.Node, path: str, schema: dict[str, tuple[Parser, Any]], ctx: _Ctx,
          globals_: dict[str, Any] | None = None, hints: dict[str, str] | None = None,
          skip: tuple[str, ...] = ()) -> _Values | None:
    entries = _mapping(node, path, ctx)
    if entries is None:
        return None
    values: dict[str, Any] = {}
    nodes: dict[str, yaml.Node] = {}
    for key, (key_node, value_node) in entries.items():
        if key in skip:
            continue
        if key not in schema:
            _unknown_key(ctx, key_node, path, key, list(schema) + list(skip),
                         (hints or {}).get(key, ""))
            continue
        parser, default = schema[key]
        nodes[key] = value_node
        ctx.nodes[_join(path, key)] = value_node
        values[key] = None      # stays None when the value is bad (already reported)
        if _is_null(value_node):
            if default is not None:
                shown = (globals_ or {}).get(key) if default is _GLOBAL else default
                if default is _REQUIRED:
                    advice = "it is required; give a value"
                else:
                    advice = f"give one or delete the line to use the default ({_show(shown)})"
                ctx.problem(value_node, _join(path, key), f"has no value; {advice}")
            continue
        try:
            values[key] = parser(value_node, ctx)
        except _Invalid as e:
            ctx.problem(value_node, _join(path, key), str(e))
    for key, (parser, default) in schema.items():
        if key in values or key in nodes:
            continue
        if default is _REQUIRED:
            ctx.problem(node, _join(path, key), "is required but missing")
        elif default is _GLOBAL:
            values[key] = (globals_ or {})[key]
        else:
            values[key] = default
    return _Values(values, nodes, node, path)


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(value) + "]"
    return str(value)


# --------------------------------------------------------------------------- config.json

_SECRET_KEYS = frozenset({"clientSecret", "privateKey", "passphrase", "primaryKey",
                          "secondaryKey", "primary", "secondary", "accessToken", "developerToken"})


class RedactedDict(dict):
    """A dict whose repr hides secret values, so a stray log line or traceback of
    the parsed config.json cannot leak the private key or client secret."""

    def __repr__(self) -> str:
        shown = {k: ("***" if k in _SECRET_KEYS else v) for k, v in self.items()}
        return "RedactedDict(" + dict.__repr__(shown) + ")"

    __str__ = __repr__


def _redacted(value: Any) -> Any:
    if isinstance(value, dict):
        return RedactedDict({k: _redacted(v) for k, v in value.items()})
    return value


def check_jwt_file(path: Path) -> tuple[dict | None, list[str], list[str]]:
    """Read and validate a Dev Console config.json.

    Returns (parsed config or None, problems, warnings); messages name the file and
    the JSON key but never contain a key, secret or passphrase.
    """
    problems: list[str] = []
    warnings: list[str] = []
    where = str(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        return None, [f"{where} does not exist; download the app's config.json from the Box "
                      "Developer Console (your app > Configuration > Add and Manage Public Keys > "
                      "Generate a Public/Private Keypair) and save it there"], []
    except OSError as e:
        return None, [f"{where} cannot be read ({e.strerror})"], []
    if not stat.S_ISREG(st.st_mode):
        return None, [f"{where} is not a regular file; point jwt_config at the app's config.json"], []
    try:
        text = path.read_text(encoding="utf-8")
    except PermissionError:
        return None, [f"{where} is not readable by this user (uid {os.getuid()}); "
                      "chown it to the service user and chmod 600"], []
    except UnicodeDecodeError:
        return None, [f"{where} is not UTF-8 text; it should be the JSON file the Box "
                      "Developer Console generated"], []
    except OSError as e:
        return None, [f"{where} cannot be read ({e.strerror})"], []
    if st.st_mode & 0o044:
        warnings.append(f"{where} is readable by {'group and others' if st.st_mode & 0o004 and st.st_mode & 0o040 else ('others' if st.st_mode & 0o004 else 'group')} "
                        f"(mode {stat.S_IMODE(st.st_mode):04o}) and holds the app's private key; "
                        f"chmod 600 {where}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        return None, [f"{where}:{e.lineno}: not valid JSON ({e.msg}, column {e.colno}); "
                      "download the config.json again from the Box Developer Console"], warnings
    if not isinstance(data, dict):
        return None, [f"{where}: expected a JSON object like the Box Developer Console's "
                      "config.json ({\"boxAppSettings\": ..., \"enterpriseID\": ...})"], warnings

    def need_str(obj: Any, keys: list[str], allow_empty: bool = False) -> str | None:
        cur = obj
        for i, key in enumerate(keys):
            if not isinstance(cur, dict):
                problems.append(f"{where}: {'.'.join(keys[:i])} should be a JSON object")
                return None
            if key not in cur:
                problems.append(f"{where}: {'.'.join(keys[:i + 1])} is missing; this is not a "
                                "Dev Console config.json for a JWT app (download it again)")
                return None
            cur = cur[key]
        if isinstance(cur, int) and not isinstance(cur, bool):
            cur = str(cur)
        if not isinstance(cur, str) or (not allow_empty and not cur.strip()):
            problems.append(f"{where}: {'.'.join(keys)} should be a non-empty string")
            return None
        return cur

    need_str(data, ["boxAppSettings", "clientID"])
    need_str(data, ["boxAppSettings", "clientSecret"])
    need_str(data, ["boxAppSettings", "appAuth", "publicKeyID"])
    key = need_str(data, ["boxAppSettings", "appAuth", "privateKey"])
    passphrase = need_str(data, ["boxAppSettings", "appAuth", "passphrase"], allow_empty=True)
    enterprise = need_str(data, ["enterpriseID"])
    if enterprise is not None and not enterprise.isdigit():
        problems.append(f"{where}: enterpriseID should be the enterprise's number (Admin Console > "
                        "Account & Billing); the service account is the enterprise subject")
    if key is not None and passphrase is not None:
        msg = _private_key_problem(key, passphrase)
        if msg:
            problems.append(f"{where}: boxAppSettings.appAuth.privateKey: {msg}")
    if problems:
        return None, problems, warnings
    return _redacted(data), problems, warnings


def _private_key_problem(key: str, passphrase: str) -> str | None:
    """Why box_sdk_gen would fail to open this key, or None.  Mirrors the SDK's own
    call (ASCII key and passphrase, PEM, password always given) so that a key that
    passes here also works there."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        key_bytes = key.encode("ascii")
    except UnicodeEncodeError:
        return "the key contains non-ASCII characters; download the config.json again"
    try:
        pass_bytes = passphrase.encode("ascii")
    except UnicodeEncodeError:
        return "the passphrase contains non-ASCII characters, which the Box SDK cannot use"
    try:
        # skipping the RSA consistency check keeps `status` fast (it loads the config too);
        # decrypting is what tells a wrong passphrase, and the SDK checks the key on use
        fast = {"unsafe_skip_rsa_key_validation": True} if _can_skip_validation() else {}
        loaded = serialization.load_pem_private_key(key_bytes, password=pass_bytes, **fast)
    except TypeError:
        return ("the key is not encrypted but the Box SDK always decrypts it with the "
                "passphrase; use the encrypted key and passphrase the Dev Console generated")
    except ValueError as e:
        text = str(e).lower()
        if "password" in text or "decrypt" in text:
            return ("the passphrase does not open the private key; copy the passphrase and "
                    "key from the same Dev Console download (or generate a new key pair)")
        return ("not a readable PEM private key (-----BEGIN ENCRYPTED PRIVATE KEY-----); "
                "download the config.json again")
    except Exception:  # cryptography raises assorted errors on garbage input
        return ("not a readable PEM private key (-----BEGIN ENCRYPTED PRIVATE KEY-----); "
                "download the config.json again")
    if not isinstance(loaded, rsa.RSAPrivateKey):
        return "Box JWT apps need an RSA key (RS256); generate the key pair in the Dev Console"
    return None


def _can_skip_validation() -> bool:
    """cryptography >= 39 can skip the slow RSA consistency check."""
    import inspect

    from cryptography.hazmat.primitives import serialization

    try:
        params = inspect.signature(serialization.load_pem_private_key).parameters
    except (TypeError, ValueError):
        return False
    return "unsafe_skip_rsa_key_validation" in params


def read_jwt_config(connection: Connection) -> dict:
    """The parsed, validated config.json of a connection, for the Box adapter.

    Raises ConfigError (without secrets) when the file changed into something invalid
    since the configuration was loaded.  The dict's repr hides secret values.
    """
    data, problems, _ = check_jwt_file(Path(connection.jwt_config))
    if problems or data is None:
        raise ConfigError([f"connections.{connection.name}.jwt_config: {p}" for p in problems])
    return data


# --------------------------------------------------------------------------- loading

def load_config(path: str | os.PathLike) -> Config:
    """Read, validate and resolve the YAML configuration; raises ConfigError listing
    every problem found (exit code 78)."""
    file = Path(path)
    display = file
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{display}: configuration file not found; copy the documented "
                          "example etc/cfbox.yaml there or pass -c FILE") from None
    except IsADirectoryError:
        raise ConfigError(f"{display}: is a folder; pass the YAML file itself with -c FILE") from None
    except PermissionError:
        raise ConfigError(f"{display}: not readable by this user (uid {os.getuid()}); "
                          "make it readable by the service user") from None
    except OSError as e:
        raise ConfigError(f"{display}: cannot be read ({e.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError(f"{display}:{line}: not UTF-8 text; save the file as UTF-8") from None

    try:
        loader = _FastLoader(text)
        try:
            root = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{display}:{mark.line + 1}:{mark.column + 1}" if mark else f"{display}"
        detail = " ".join(x for x in (e.context, e.problem) if x)
        hint = "check the indentation (spaces, not tabs) and quote values that contain ': ' or start with * & ! % @ `"
        if "\t" in (e.problem or "") or "'\\t'" in (e.problem or ""):
            hint = "YAML indentation must use spaces, not tabs"
        raise ConfigError(f"{where}: YAML syntax error: {detail}; {hint}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{display}: YAML error: {e}") from None

    if root is None or _is_null(root):
        raise ConfigError(f"{display}: the file is empty; start from the documented example "
                          "etc/cfbox.yaml (state_dir, connections, post_production, delivery)")
    ctx = _Ctx(file=display, base_dir=file.resolve().parent, problems=[], warnings=[])
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError(_fmt(display, root, "", f"the top level must be a mapping of keys "
                                                  f"(state_dir:, connections:, post_production:, "
                                                  f"delivery:), found a {_kind(root)}"))
    config = _build(root, ctx)
    if ctx.problems:
        raise ConfigError(ctx.in_file_order(ctx.problems))
    assert config is not None
    return config


def _build(root: yaml.MappingNode, ctx: _Ctx) -> Config | None:
    entries = _mapping(root, "", ctx) or {}
    # `x-...` keys hold YAML anchors for reuse (as in docker compose); never read.
    extension_keys = tuple(k for k in entries if k.startswith("x-"))
    top = _walk(root, "", TOP_SCHEMA, ctx, skip=TOP_SECTIONS + extension_keys)
    if top is None:
        return None
    g = top.values
    if g["state_dir"] is None:
        env = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
        g["state_dir"] = Path(env) if env else Path(DEFAULT_STATE_DIR)

    connections = _connections(entries.get("connections"), ctx)
    outgoing: list[OutgoingMapping] = []
    incoming: list[IncomingMapping] = []
    cf: list[CreativeForce] = []
    names: dict[str, str] = {}
    folders: list[tuple[str, str, Path]] = []
    for section in ("post_production", "delivery"):
        pair = entries.get(section)
        if pair is None or _is_null(pair[1]):
            continue
        key_node, seq = pair
        if not isinstance(seq, yaml.SequenceNode):
            ctx.problem(seq, section, f"expected a list of entries (lines starting with '- '), "
                                      f"found a {_kind(seq)}")
            continue
        for i, item in enumerate(seq.value):
            path = f"{section}[{i}]"
            schema = PP_SCHEMA if section == "post_production" else DELIVERY_SCHEMA
            hints = {} if section == "post_production" else {
                k: "only post_production entries download from Box; delivery entries only upload"
                for k in [*INCOMING_SCHEMA, "download_folder_id", "incoming"] if k != "workers"}
            if section == "delivery":
                hints.update({k: "only post_production entries have Creative Force keys "
                                 "(docs/creative-force.md)" for k in CF_KEYS})
                hints.update({"outgoing": "delivery entries use `source`",
                              "upload_folder_id": "delivery entries use `folder_id`"})
            else:
                hints.update({"source": "post_production entries use `outgoing`",
                              "folder_id": "post_production entries use `upload_folder_id` "
                                           "and `download_folder_id`"})
            v = _walk(item, path, schema, ctx, globals_=g, hints=hints)
            if v is None:
                continue
            name = v.values.get("name")
            if name is not None:
                if name in names:
                    ctx.problem(v.line_node("name"), f"{path}.name",
                                f"{name!r} is already the name of {names[name]}; "
                                "every post_production and delivery entry needs its own name")
                else:
                    names[name] = path
            # collected from every entry, complete or not, so that an overlap is
            # reported together with the entry's other problems
            for key, role in (("outgoing", "outgoing"), ("source", "outgoing"),
                              ("rejected", "outgoing"),
                              ("incoming", "incoming"), ("sent", "sent")):
                local = v.values.get(key)
                if local is not None and (role != "sent" or v.values.get("after_upload") == "move"):
                    folders.append((role, f"{path}.{key}", local))
            conn_name = _resolve_connection(v, path, connections, ctx)
            if section == "post_production":
                _post_production(v, path, str(name), conn_name, ctx, outgoing, incoming, cf)
            else:
                _delivery(v, path, str(name), conn_name, ctx, outgoing)

    if not outgoing and not incoming and not ctx.problems:
        ctx.warn(None, "", "no post_production or delivery entries; there is nothing to do")
    _check_overlaps(folders, g["state_dir"], ctx)
    _check_folder_reuse(outgoing, incoming, ctx)
    _check_local_folders(outgoing, incoming, ctx)
    if ctx.problems:
        return None
    return Config(
        path=ctx.file.resolve(),
        state_dir=g["state_dir"],
        connections=connections,
        outgoing=tuple(outgoing),
        incoming=tuple(incoming),
        creative_force=tuple(cf),
        settle_time=g["settle_time"],
        poll_interval=g["poll_interval"],
        workers=g["workers"],
        log_level=g["log_level"],
        shutdown_grace=g["shutdown_grace"],
        warnings=tuple(ctx.in_file_order(ctx.warnings)),
    )


def _connections(pair: tuple[yaml.Node, yaml.Node] | None, ctx: _Ctx) -> dict[str, Connection]:
    if pair is None:
        ctx.problem(None, "connections", "is required: one entry per Box app, e.g. "
                    "`connections: {acme: {jwt_config: /etc/cfbox/acme-config.json}}`")
        return {}
    key_node, node = pair
    entries = _mapping(node, "connections", ctx)
    if entries is None:
        return {}
    if not entries:
        ctx.problem(node, "connections", "needs at least one connection (a name with jwt_config:)")
    out: dict[str, Connection] = {}
    checked: dict[Path, tuple[list[str], list[str]]] = {}
    for name, (name_node, value_node) in entries.items():
        path = f"connections.{name}"
        if not _NAME_RE.match(name):
            ctx.problem(name_node, path, "connection names use 1-64 letters, digits, '.', '_' "
                                         "or '-' (e.g. acme)")
            continue
        v = _walk(value_node, path, CONNECTION_SCHEMA, ctx, skip=("webhooks",))
        if v is None:
            out[name] = Connection(name=name, jwt_config=Path())   # known name, bad body
            continue
        hooks = _webhooks(value_node, path, ctx)
        jwt_path = v.values.get("jwt_config")
        if jwt_path is None:
            pass    # already reported
        elif jwt_path not in checked:
            _, problems, warnings = check_jwt_file(jwt_path)
            checked[jwt_path] = (problems, warnings)
            for w in warnings:
                ctx.warn(v.line_node("jwt_config"), f"{path}.jwt_config", w)
        for p in checked.get(jwt_path, ([], []))[0]:
            ctx.problem(v.line_node("jwt_config"), f"{path}.jwt_config", p)
        base = v.values["base_url"]
        for key in ("base_url", "upload_url"):
            url = v.values[key]
            if url and url.startswith("http://") and urlsplit(url).hostname not in (
                    "localhost", "127.0.0.1", "::1"):
                ctx.warn(v.line_node(key), f"{path}.{key}",
                         "plain http sends tokens unencrypted; use https outside a test set-up")
        if base and v.values["upload_url"] is None and "api.box.com" not in base:
            ctx.warn(v.line_node("base_url"), f"{path}.upload_url",
                     "base_url is custom but upload_url is not set, so uploads still go to "
                     "https://upload.box.com/api")
        out[name] = Connection(
            name=name,
            jwt_config=jwt_path or Path(),
            base_url=base,
            upload_url=v.values["upload_url"],
            api_calls_per_minute=v.values["api_calls_per_minute"],
            uploads_per_minute=v.values["uploads_per_minute"],
            connect_timeout=v.values["connect_timeout"],
            read_timeout=v.values["read_timeout"],
            webhooks=hooks,
        )
        if hooks is not None and jwt_path is not None and not checked.get(jwt_path, ([], []))[0]:
            _check_webhook_keys(jwt_path, path, _webhooks_node(value_node) or value_node, ctx)
    return out


def _webhooks(conn_node: yaml.Node, path: str, ctx: _Ctx) -> WebhookSettings | None:
    """The optional `webhooks:` of a connection (docs/webhooks.md)."""
    node = _webhooks_node(conn_node)
    if node is None or _is_null(node):
        return None
    v = _walk(node, f"{path}.webhooks", WEBHOOKS_SCHEMA, ctx)
    if v is None or v.values.get("public_url") is None or v.values.get("listen") is None:
        return None
    host, port = v.values["listen"]
    return WebhookSettings(public_url=v.values["public_url"], listen_host=host, listen_port=port)


def _webhooks_node(conn_node: yaml.Node) -> yaml.Node | None:
    if not isinstance(conn_node, yaml.MappingNode):
        return None
    for key_node, value_node in conn_node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == "webhooks":
            return value_node
    return None


def _check_webhook_keys(jwt_path: Path, path: str, node: yaml.Node, ctx: _Ctx) -> None:
    """Webhook signature keys live in the app's config.json; say so at load time
    rather than refusing every delivery later.  Never shows a key."""
    try:
        data = json.loads(Path(jwt_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # reported by check_jwt_file
    hooks = data.get("webhooks") if isinstance(data, dict) else None
    hooks = hooks if isinstance(hooks, dict) else {}
    have = [k for k in ("primaryKey", "secondaryKey") if isinstance(hooks.get(k), str) and hooks[k].strip()]
    if not have:
        ctx.problem(node, f"{path}.webhooks",
                    f"{jwt_path} has no webhooks.primaryKey or webhooks.secondaryKey; generate the "
                    "signature keys in the Developer Console (your app > Webhooks > Manage signature "
                    "keys), add them to config.json as {\"webhooks\": {\"primaryKey\": ..., "
                    "\"secondaryKey\": ...}}, or remove `webhooks:`")
    elif len(have) == 1:
        ctx.warn(node, f"{path}.webhooks", f"{jwt_path} has only webhooks.{have[0]}; deliveries signed "
                                           "with the other key will be refused (fine while rotating)")


def _resolve_connection(v: _Values, path: str, connections: dict[str, Connection],
                        ctx: _Ctx) -> str:
    name = v.values.get("connection")
    if name is None and "connection" in v.nodes and not _is_null(v.nodes["connection"]):
        return ""   # a bad value, already reported
    if name is None:
        if len(connections) == 1:
            return next(iter(connections))
        if connections:
            ctx.problem(v.node, f"{path}.connection", "is required when several connections are "
                        f"defined; use one of: {', '.join(sorted(connections))}")
        return ""
    if name is not None and connections and name not in connections:
        close = difflib.get_close_matches(name, list(connections), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        ctx.problem(v.line_node("connection"), f"{path}.connection",
                    f"no connection named {name!r}; {hint}defined connections: "
                    f"{', '.join(sorted(connections))}")
    return name or ""


def _outgoing_fields(v: _Values, path: str, local_key: str, ctx: _Ctx) -> dict[str, Any]:
    val = v.values
    if val["after_upload"] == "move" and val["sent"] is None:
        ctx.problem(v.line_node("after_upload"), f"{path}.sent",
                    "after_upload: move needs `sent:`, the local folder uploaded files move to")
    if val["sent"] is not None and val["after_upload"] != "move":
        ctx.warn(v.line_node("sent"), f"{path}.sent",
                 f"ignored because after_upload is {val['after_upload']!r}, not 'move'")
    if val["include"] is not None and not val["include"]:
        ctx.problem(v.line_node("include"), f"{path}.include",
                    'an empty include list matches nothing; use ["*"] for every file')
    threshold = val["chunked_threshold"]
    if threshold is None:
        pass
    elif threshold < BOX_MIN_SESSION_SIZE:
        ctx.warn(v.line_node("chunked_threshold"), f"{path}.chunked_threshold",
                 f"{threshold} bytes is below Box's 20 MB minimum for upload sessions; real "
                 "Box will refuse chunked uploads of files under 20 MB")
    elif threshold > BOX_DIRECT_UPLOAD_MAX * 4:
        ctx.warn(v.line_node("chunked_threshold"), f"{path}.chunked_threshold",
                 "Box advises chunked uploads above 50 MB; large direct uploads restart from "
                 "zero after any network error")
    return dict(
        settle_time=val["settle_time"],
        rescan_interval=val["rescan_interval"],
        watch=val["watch"],
        include=val["include"],
        exclude=val["exclude"],
        on_conflict=val["on_conflict"],
        after_upload=val["after_upload"],
        sent_dir=val["sent"],
        workers=val["workers"],
        chunked_threshold=threshold,
        part_workers=val["part_workers"],
        check_images=val["check_images"],
    )


def _post_production(v: _Values, path: str, name: str, conn: str, ctx: _Ctx,
                     outgoing: list[OutgoingMapping], incoming: list[IncomingMapping],
                     cf: list[CreativeForce] | None = None) -> None:
    val = v.values
    if not any(k in v.nodes for k in ("outgoing", "upload_folder_id", "download_folder_id",
                                      "incoming")):
        ctx.problem(v.node, path, "needs `outgoing` + `upload_folder_id` (files to the vendor) "
                                  "and/or `download_folder_id` + `incoming` (files back)")
        return
    for a, b in (("outgoing", "upload_folder_id"), ("download_folder_id", "incoming"),
                 ("rejected", "rejection_folder_id")):
        if (a in v.nodes) != (b in v.nodes):
            given, missing = (a, b) if a in v.nodes else (b, a)
            ctx.problem(v.line_node(given), f"{path}.{missing}",
                        f"`{a}` and `{b}` go together; `{given}` is set, so set `{missing}` "
                        f"too (or remove `{given}`)")
    main_out = main_in = None
    if val["outgoing"] is not None and val["upload_folder_id"] is not None:
        fields = _outgoing_fields(v, path, "outgoing", ctx)
        main_out = OutgoingMapping(
            name=name, kind="post_production", connection=conn, local=val["outgoing"],
            folder_id=val["upload_folder_id"], key_path=path, **fields)
        outgoing.append(main_out)
    elif "outgoing" not in v.nodes and "upload_folder_id" not in v.nodes:
        for key in OUTGOING_SCHEMA:
            if key in v.nodes and key not in INCOMING_SCHEMA:
                ctx.warn(v.nodes[key], f"{path}.{key}", "ignored: this entry has no outgoing half "
                                                        "(outgoing + upload_folder_id)")
    if val["download_folder_id"] is not None and val["incoming"] is not None:
        if val["after_download"] == "move" and val["archive_folder_id"] is None:
            ctx.problem(v.line_node("after_download"), f"{path}.archive_folder_id",
                        "after_download: move needs `archive_folder_id`, the Box folder "
                        "downloaded files move to")
        if val["archive_folder_id"] is not None:
            if val["archive_folder_id"] == val["download_folder_id"]:
                ctx.problem(v.line_node("archive_folder_id"), f"{path}.archive_folder_id",
                            "is the download folder itself; use a separate Box folder such as "
                            "an 'Imported' archive")
            elif val["after_download"] != "move":
                ctx.warn(v.line_node("archive_folder_id"), f"{path}.archive_folder_id",
                         f"ignored because after_download is {val['after_download']!r}, not 'move'")
        if val["invalid_folder_id"] is not None:
            if val["invalid_folder_id"] == val["download_folder_id"]:
                ctx.problem(v.line_node("invalid_folder_id"), f"{path}.invalid_folder_id",
                            "is the download folder itself; use a separate Box folder such as "
                            "CF_Archive/_CF-Invalid-Files")
            elif tuple(val["accept"] or ()) == ("*",):
                ctx.warn(v.line_node("invalid_folder_id"), f"{path}.invalid_folder_id",
                         'never used while accept is ["*"] (every name is accepted); list the '
                         'formats you take back, e.g. accept: ["*.tif", "*.jpg"]')
        if val["accept"] is not None and not val["accept"]:
            ctx.problem(v.line_node("accept"), f"{path}.accept",
                        'an empty accept list refuses every return; use ["*"] to take any file')
        main_in = IncomingMapping(
            name=name, connection=conn, folder_id=val["download_folder_id"],
            local=val["incoming"], key_path=path,
            poll_interval=val["poll_interval"], long_poll=val["long_poll"],
            after_download=val["after_download"], archive_folder_id=val["archive_folder_id"],
            on_local_change=val["on_local_change"], file_mode=val["file_mode"],
            dir_mode=val["dir_mode"], group=val["group"], workers=val["workers"],
            accept=tuple(val["accept"] or ("*",)), invalid_folder_id=val["invalid_folder_id"])
        incoming.append(main_in)
    elif "download_folder_id" not in v.nodes and "incoming" not in v.nodes:
        for key in INCOMING_SCHEMA:
            if key in v.nodes and key not in OUTGOING_SCHEMA:
                ctx.warn(v.nodes[key], f"{path}.{key}", "ignored: this entry has no incoming "
                                                        "half (download_folder_id + incoming)")
    _creative_force(v, path, name, conn, ctx, main_out, main_in, outgoing, cf)


def _creative_force(v: _Values, path: str, name: str, conn: str, ctx: _Ctx,
                    main_out: OutgoingMapping | None, main_in: IncomingMapping | None,
                    outgoing: list[OutgoingMapping], cf: list[CreativeForce] | None) -> None:
    """The Creative Force keys of a post_production entry: the rejection half (a third
    outgoing half with every outgoing guarantee) and the `<entry>:cf` work."""
    val = v.values
    rejection = None
    if val["rejected"] is not None and val["rejection_folder_id"] is not None:
        if val["rejection_folder_id"] in (val["upload_folder_id"], val["download_folder_id"]):
            ctx.problem(v.line_node("rejection_folder_id"), f"{path}.rejection_folder_id",
                        "is also this entry's upload or download folder; use the vendor's own "
                        "Rejection folder")
        if main_out is not None:   # same outgoing keys; reported once, for the main half
            # its own place below `sent`: a rejected a.tif must not overwrite a sent a.tif
            rejection = replace(main_out, name=f"{name}/rejection", kind="rejection",
                                local=val["rejected"], folder_id=val["rejection_folder_id"],
                                sent_dir=None if main_out.sent_dir is None
                                else main_out.sent_dir / "rejection")
        else:
            rejection = OutgoingMapping(
                name=f"{name}/rejection", kind="rejection", connection=conn,
                local=val["rejected"], folder_id=val["rejection_folder_id"], key_path=path,
                **_outgoing_fields(v, path, "rejected", ctx))
        outgoing.append(rejection)
    if val["completion_log"] is not None and main_out is None:
        ctx.problem(v.line_node("completion_log"), f"{path}.completion_log",
                    "needs the outgoing half (outgoing + upload_folder_id): completion logs "
                    "describe batches sent to the vendor")
    both = main_out is not None and main_in is not None
    for key in ("match", "return_due"):
        if key in v.nodes and not both:
            ctx.warn(v.nodes[key], f"{path}.{key}", "ignored: round-trip tracking needs both "
                                                    "the outgoing and the incoming half")
    if cf is None or main_out is None or not (both or val["completion_log"] is not None):
        return
    cf.append(CreativeForce(
        name=name, connection=conn, key_path=path, outgoing=main_out, rejection=rejection,
        incoming=main_in, completion_log=val["completion_log"],
        match=val["match"] or "filename", return_due=val["return_due"] if both else None))


COMPLETION_LOG_FIELDS = ("batch", "mapping")


def p_completion_log(node: yaml.Node, ctx: _Ctx) -> CompletionLog | None:
    """`completion_log: {quiet: 5m, name: "{batch}_transfer_completed.log"}`, or `true`
    for both defaults.  The name is tried with a sample batch so that a name Box would
    refuse is reported now, not at the first finished batch."""
    from cfbox_watch.names import box_name_problem

    if isinstance(node, yaml.ScalarNode):
        if _scalar(node) is True:
            return CompletionLog()
        if _scalar(node) is False:
            return None   # off, as if the key were absent
        raise _Invalid('expected `true`, `false` or a mapping such as {quiet: 5m, name: '
                       '"{batch}_transfer_completed.log"}')
    if not isinstance(node, yaml.MappingNode):
        raise _Invalid(f"expected a mapping with quiet and name, found a {_kind(node)}")
    out: dict[str, Any] = {}
    for key_node, value_node in node.value:
        key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
        if key == "quiet":
            try:
                out["quiet"] = p_duration(value_node, ctx)
            except _Invalid as e:
                raise _Invalid(f"quiet: {e}") from None
        elif key == "name":
            value = _scalar(value_node)
            if not isinstance(value, str) or not value.strip():
                raise _Invalid('name: expected a file name pattern such as '
                               '"{batch}_transfer_completed.log"')
            try:
                sample = value.format(batch="P123_OnModel", mapping="acme")
            except (KeyError, IndexError, ValueError) as e:
                raise _Invalid(f"name: {value!r} has an unknown or broken placeholder ({e}); "
                               "use {batch} and {mapping}") from None
            if "{batch}" not in value:
                raise _Invalid(f"name: {value!r} lacks {{batch}}; every batch needs its own log "
                               "name, e.g. \"{batch}_transfer_completed.log\"")
            problem = box_name_problem(sample)
            if problem:
                raise _Invalid(f"name: {value!r} gives a name Box refuses ({problem})")
            out["name"] = value
        else:
            raise _Invalid(f"unknown key {key!r}; completion_log takes quiet and name")
    return CompletionLog(**out)


def _delivery(v: _Values, path: str, name: str, conn: str, ctx: _Ctx,
              outgoing: list[OutgoingMapping]) -> None:
    val = v.values
    if val.get("source") is None or val.get("folder_id") is None:
        return
    fields = _outgoing_fields(v, path, "source", ctx)
    outgoing.append(OutgoingMapping(
        name=name, kind="delivery", connection=conn, local=val["source"],
        folder_id=val["folder_id"], key_path=path, **fields))


# --------------------------------------------------------------------------- cross checks

def _real(path: Path) -> Path:
    try:
        return path.resolve(strict=False)
    except (OSError, RuntimeError):
        return path


def _nested(a: Path, b: Path) -> bool:
    """True when a and b are the same folder or one contains the other."""
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)


def overlap_problems(folders: list[tuple[str, str, Path]], state_dir: Path | None = None
                     ) -> list[tuple[str, str]]:
    """Pairs of local folders that would loop or collide, as (key path, message).

    `folders` holds (role, key path, folder) with role "outgoing", "incoming" or "sent".
    An outgoing folder inside an incoming one (or the reverse) re-uploads downloads;
    nested outgoing folders upload the same file twice; nested incoming folders write
    into each other; a sent folder inside an outgoing one re-uploads what it moved.
    """
    out: list[tuple[str, str]] = []
    resolved = [(role, key, _real(p)) for role, key, p in folders]
    for i, (role_a, key_a, a) in enumerate(resolved):
        for role_b, key_b, b in resolved[i + 1:]:
            if not _nested(a, b):
                continue
            roles = {role_a, role_b}
            how = "is the same folder as" if a == b else (
                "is inside" if b.is_relative_to(a) else "contains")
            if roles == {"outgoing", "incoming"}:
                why = "downloaded files would be uploaded again (a loop); keep them apart"
            elif roles == {"outgoing"}:
                why = "the same files would be uploaded by two mappings; keep them apart"
            elif roles == {"incoming"}:
                why = "two mappings would write into the same files; keep them apart"
            elif roles == {"sent", "outgoing"}:
                why = "moved files would be uploaded again; put `sent` outside every watched folder"
            else:
                continue
            out.append((key_b, f"{b} {how} {key_a} ({a}): {why}"))
    if state_dir is not None:
        sd = _real(state_dir)
        for role, key, p in resolved:
            if role == "outgoing" and (sd == p or sd.is_relative_to(p)):
                out.append(("state_dir", f"{sd} is inside {key} ({p}): the state database "
                                         "would be uploaded; keep state_dir outside watched folders"))
    return out


def _check_overlaps(folders: list[tuple[str, str, Path]], state_dir: Path, ctx: _Ctx) -> None:
    for key, message in overlap_problems(folders, state_dir):
        ctx.problem(ctx.nodes.get(key), key, message)


_FOLDER_KEY = {"post_production": "upload_folder_id", "delivery": "folder_id",
               "rejection": "rejection_folder_id"}
_LOCAL_KEY = {"post_production": "outgoing", "delivery": "source", "rejection": "rejected"}


def _check_folder_reuse(outgoing: list[OutgoingMapping], incoming: list[IncomingMapping],
                        ctx: _Ctx) -> None:
    downloads = {(m.connection, m.folder_id): m for m in incoming}
    for m in outgoing:
        hit = downloads.get((m.connection, m.folder_id))
        if hit is not None:
            key = _FOLDER_KEY[m.kind]
            ctx.problem(ctx.nodes.get(f"{m.key_path}.{key}"), f"{m.key_path}.{key}",
                        f"Box folder {m.folder_id} is also {hit.key_path}.download_folder_id; "
                        "uploads would come straight back down; use separate Box folders")
    seen: dict[tuple[str, str], OutgoingMapping] = {}
    for m in outgoing:
        prev = seen.setdefault((m.connection, m.folder_id), m)
        if prev is not m:
            ctx.warn(ctx.nodes.get(f"{m.key_path}.name"), m.key_path, f"uploads into the same Box folder {m.folder_id} as "
                                       f"{prev.key_path}; same-named files will become versions "
                                       "of each other")


def _check_local_folders(outgoing: list[OutgoingMapping], incoming: list[IncomingMapping],
                         ctx: _Ctx) -> None:
    """A local folder that is a file is an error; a missing one only a warning, because
    a network share may simply not be mounted yet when the config is checked."""
    for m in outgoing:
        key = f"{m.key_path}.{_LOCAL_KEY[m.kind]}"
        if m.local.exists() and not m.local.is_dir():
            ctx.problem(ctx.nodes.get(key), key, f"{m.local} is a file, not a folder")
        elif not m.local.exists():
            ctx.warn(ctx.nodes.get(key), key, f"{m.local} does not exist (yet); create it or mount the share")
    for m in incoming:
        key = f"{m.key_path}.incoming"
        if m.local.exists() and not m.local.is_dir():
            ctx.problem(ctx.nodes.get(key), key, f"{m.local} is a file, not a folder")

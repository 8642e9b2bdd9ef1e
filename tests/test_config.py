"""Configuration loading and validation: real files, real keys, real subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from functools import lru_cache
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, strategies as st

from cfbox_watch import config as cfg
from cfbox_watch.config_model import DEFAULT_EXCLUDE, Connection, IncomingMapping, OutgoingMapping
from cfbox_watch.errors import EX_CONFIG, ConfigError

REPO = Path(__file__).resolve().parent.parent
PASSPHRASE = "correct horse battery staple"
CLIENT_SECRET = "s3cr3t-client-secret-XYZ"


# ----------------------------------------------------------------------------- helpers

@lru_cache(maxsize=None)
def _rsa_pem(passphrase: str | None, bits: int = 2048) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    enc = (serialization.BestAvailableEncryption(passphrase.encode())
           if passphrase else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             enc).decode()


def make_jwt_json(path: Path, *, passphrase: str = PASSPHRASE, key_pass: str | None = None,
                  mode: int = 0o600, drop: tuple[str, ...] = (), **over) -> Path:
    """Write a Dev-Console-shaped config.json; `key_pass` encrypts the key with another
    passphrase than the one written (the 'wrong passphrase' case)."""
    data = {
        "boxAppSettings": {
            "clientID": "abc123clientid",
            "clientSecret": CLIENT_SECRET,
            "appAuth": {
                "publicKeyID": "kid42",
                "privateKey": _rsa_pem(key_pass if key_pass is not None else passphrase),
                "passphrase": passphrase,
            },
        },
        "enterpriseID": "998877",
    }
    for dotted in drop:
        *parents, last = dotted.split(".")
        cur = data
        for p in parents:
            cur = cur[p]
        del cur[last]
    for dotted, value in over.items():
        *parents, last = dotted.split("__")
        cur = data
        for p in parents:
            cur = cur[p]
        cur[last] = value
    path.write_text(json.dumps(data, indent=2))
    path.chmod(mode)
    return path


def write_yaml(tmp: Path, body: str, *, name: str = "cfbox.yaml", jwt: bool = True) -> Path:
    if jwt and not (tmp / "acme-config.json").exists():
        make_jwt_json(tmp / "acme-config.json")
    for d in ("out", "in", "final", "out2", "in2"):
        (tmp / d).mkdir(exist_ok=True)
    p = tmp / name
    p.write_text(textwrap.dedent(body).lstrip("\n"))
    return p


BASE = """
state_dir: state
connections:
  acme:
    jwt_config: acme-config.json
post_production:
  - name: acme-retouch
    connection: acme
    outgoing: out
    upload_folder_id: "1234"
    download_folder_id: "5678"
    incoming: in
delivery:
  - name: brand-final
    connection: acme
    source: final
    folder_id: "9012"
"""


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        cfg.load_config(path)
    problems = info.value.problems
    assert problems and all("\n" not in p for p in problems), problems   # one line each
    assert all(p.startswith(str(path)) for p in problems), problems      # each names the file
    return problems


def run_check_offline(path: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "cfbox_watch", "-c", str(path), "check",
                           "--offline"], capture_output=True, text=True, env=full_env,
                          timeout=60)


def one_problem(problems: list[str], *needles: str) -> str:
    hits = [p for p in problems if all(n in p for n in needles)]
    assert hits, f"no problem containing {needles} in:\n" + "\n".join(problems)
    return hits[0]


# ----------------------------------------------------------------------------- loading

def test_base_config_loads_and_maps_halves(tmp_path):
    c = cfg.load_config(write_yaml(tmp_path, BASE))
    assert c.state_dir == tmp_path / "state"
    assert c.path == tmp_path / "cfbox.yaml"
    assert set(c.connections) == {"acme"}
    conn = c.connections["acme"]
    assert conn.jwt_config == tmp_path / "acme-config.json"
    assert (conn.api_calls_per_minute, conn.uploads_per_minute) == (900, 200)
    assert [(m.name, m.kind, m.folder_id, m.local, m.key_path) for m in c.outgoing] == [
        ("acme-retouch", "post_production", "1234", tmp_path / "out", "post_production[0]"),
        ("brand-final", "delivery", "9012", tmp_path / "final", "delivery[0]"),
    ]
    [inc] = c.incoming
    assert (inc.name, inc.folder_id, inc.local, inc.key_path) == (
        "acme-retouch", "5678", tmp_path / "in", "post_production[0]")
    assert c.outgoing[0].exclude == DEFAULT_EXCLUDE
    assert c.outgoing[0].settle_time == 3.0 and inc.poll_interval == 60.0
    assert c.mapping_names() == ["acme-retouch", "brand-final"]
    assert c.warnings == ()


def test_globals_flow_into_mappings_and_overrides_win(tmp_path):
    body = BASE.replace("state_dir: state", "state_dir: state\nsettle_time: 500ms\n"
                        "poll_interval: 2m\nworkers: 7\nlog_level: DEBUG\nshutdown_grace: 1m30s")
    body = body.replace('    folder_id: "9012"', '    folder_id: "9012"\n    settle_time: 10\n'
                        '    workers: 2\n    chunked_threshold: 64MiB\n    after_upload: move\n'
                        '    sent: sent\n    exclude: ["*.xmp"]\n    watch: poll\n'
                        '    on_conflict: rename')
    body = body.replace("    incoming: in", "    incoming: in\n    file_mode: 0640\n"
                        '    dir_mode: "2770"\n    long_poll: no\n    after_download: move\n'
                        '    archive_folder_id: 42\n    on_local_change: skip')
    c = cfg.load_config(write_yaml(tmp_path, body))
    assert (c.settle_time, c.poll_interval, c.workers, c.log_level, c.shutdown_grace) == (
        0.5, 120.0, 7, "debug", 90.0)
    pp, dl = c.outgoing
    assert (pp.settle_time, pp.workers) == (0.5, 7)
    assert (dl.settle_time, dl.workers, dl.chunked_threshold) == (10.0, 2, 64 * 2**20)
    assert (dl.after_upload, dl.sent_dir, dl.exclude, dl.watch, dl.on_conflict) == (
        "move", tmp_path / "sent", ("*.xmp",), "poll", "rename")
    [inc] = c.incoming
    assert (inc.poll_interval, inc.file_mode, inc.dir_mode, inc.long_poll) == (
        120.0, 0o640, 0o2770, False)
    assert (inc.after_download, inc.archive_folder_id, inc.on_local_change) == ("move", "42", "skip")


def test_connection_keys_and_single_connection_default(tmp_path):
    body = """
    connections:
      acme:
        jwt_config: acme-config.json
        base_url: http://127.0.0.1:9/
        upload_url: http://127.0.0.1:9/api
        api_calls_per_minute: 100
        uploads_per_minute: 10
        connect_timeout: 2s
        read_timeout: 11m
    delivery:
      - name: d
        source: final
        folder_id: 77
    """
    c = cfg.load_config(write_yaml(tmp_path, body))
    conn = c.connections["acme"]
    assert conn == Connection(name="acme", jwt_config=tmp_path / "acme-config.json",
                              base_url="http://127.0.0.1:9", upload_url="http://127.0.0.1:9/api",
                              api_calls_per_minute=100, uploads_per_minute=10,
                              connect_timeout=2.0, read_timeout=660.0)
    assert c.outgoing[0].connection == "acme" and c.outgoing[0].folder_id == "77"


def test_outgoing_only_and_incoming_only_post_production(tmp_path):
    body = """
    connections: {acme: {jwt_config: acme-config.json}}
    post_production:
      - {name: a, outgoing: out, upload_folder_id: "1"}
      - {name: b, download_folder_id: "2", incoming: in}
    """
    c = cfg.load_config(write_yaml(tmp_path, body))
    assert [m.name for m in c.outgoing] == ["a"] and [m.name for m in c.incoming] == ["b"]


def test_state_dir_defaults_to_systemd_state_directory(tmp_path, monkeypatch):
    body = BASE.replace("state_dir: state\n", "")
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/cfbox-watch-x")
    assert cfg.load_config(write_yaml(tmp_path, body)).state_dir == Path("/var/lib/cfbox-watch-x")
    monkeypatch.delenv("STATE_DIRECTORY")
    assert cfg.load_config(tmp_path / "cfbox.yaml").state_dir == Path("/var/lib/cfbox-watch")


def test_anchors_merge_keys_and_x_keys(tmp_path):
    body = """
    x-common: &common
      connection: acme
      settle_time: 7s
    connections: {acme: {jwt_config: acme-config.json}}
    delivery:
      - <<: *common
        name: d1
        source: final
        folder_id: "1"
      - <<: *common
        name: d2
        source: out
        folder_id: "2"
        settle_time: 1s
    """
    c = cfg.load_config(write_yaml(tmp_path, body))
    assert [m.settle_time for m in c.outgoing] == [7.0, 1.0]


def test_relative_paths_resolve_against_config_folder_not_cwd(tmp_path, monkeypatch):
    sub = tmp_path / "etc"
    sub.mkdir()
    p = write_yaml(sub, BASE)
    monkeypatch.chdir(tmp_path)
    c = cfg.load_config(Path("etc/cfbox.yaml"))
    assert c.outgoing[0].local == sub / "out"
    assert c.connections["acme"].jwt_config == sub / "acme-config.json"
    assert c.path == p


# ----------------------------------------------------------------------------- durations, sizes

@pytest.mark.parametrize("text,seconds", [
    ("3s", 3.0), ("500ms", 0.5), ("2m", 120.0), ("1h", 3600.0), ("1d", 86400.0),
    ("1m30s", 90.0), ("1.5s", 1.5), (" 2 m ", 120.0), ("10", 10.0), (0, 0.0), (2.5, 2.5),
    ("3S", 3.0), ("5min", 300.0),
])
def test_parse_duration(text, seconds):
    assert cfg.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["3x", "s", "", "-1s", -2, True, None, "1h-3m", ".inf",
                                 float("nan"), "3 seconds", [1]])
def test_parse_duration_rejects(bad):
    with pytest.raises(ValueError):
        cfg.parse_duration(bad)


@pytest.mark.parametrize("text,size", [
    ("50MB", 50_000_000), ("20MiB", 20 * 2**20), ("1.5GB", 1_500_000_000), ("100", 100),
    (4096, 4096), ("8 kib", 8192), ("1TB", 10**12), ("7B", 7), ("2GiB", 2 * 2**30),
])
def test_parse_size(text, size):
    assert cfg.parse_size(text) == size


@pytest.mark.parametrize("bad", ["50 M", "MB", "-5MB", "5XB", True, None, "1e3", "ten"])
def test_parse_size_rejects(bad):
    with pytest.raises(ValueError):
        cfg.parse_size(bad)


_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


@given(st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(sorted(_UNITS))),
                min_size=1, max_size=4))
def test_duration_sums_its_parts(parts):
    text = "".join(f"{n}{u}" for n, u in parts)
    assert cfg.parse_duration(text) == pytest.approx(sum(n * _UNITS[u] for n, u in parts))


@given(st.integers(0, 10**6), st.sampled_from(["KB", "MB", "GB", "KiB", "MiB", "GiB", "B", ""]))
def test_size_multiplies_unit(n, unit):
    factor = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9,
              "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}[unit]
    assert cfg.parse_size(f"{n}{unit}") == n * factor


@given(st.text(max_size=12))
def test_parse_duration_never_crashes_otherwise(text):
    try:
        assert cfg.parse_duration(text) >= 0
    except ValueError as e:
        assert str(e)


# ----------------------------------------------------------------------------- rejections

def test_unknown_key_suggests_closest_with_file_line_and_path(tmp_path):
    body = BASE.replace('    upload_folder_id: "1234"', '    upload_folder_id: "1234"\n'
                        "    setle_time: 3s")
    p = write_yaml(tmp_path, body)
    msg = one_problem(problems_of(p), "post_production[0].setle_time")
    assert msg.startswith(f"{p}:10: ")
    assert "settle_time" in msg


def test_unknown_top_level_key(tmp_path):
    p = write_yaml(tmp_path, "conections: {}\n" + BASE)
    problems = problems_of(p)
    assert one_problem(problems, f"{p}:1: conections", "connections")


def test_delivery_with_incoming_key_is_explained(tmp_path):
    body = BASE.replace('    folder_id: "9012"', '    folder_id: "9012"\n    download_folder_id: "3"')
    msg = one_problem(problems_of(write_yaml(tmp_path, body)), "delivery[0].download_folder_id")
    assert "only post_production entries download" in msg


def test_every_problem_reported_at_once(tmp_path):
    body = """
    settle_time: soon
    workers: many
    connections:
      acme:
        jwt_config: missing.json
    post_production:
      - name: a
        connection: acmee
        outgoing: out
        upload_folder_id: abc
        download_folder_id: "0"
        incoming: in
        watch: inotfy
        chunked_threshold: 50 M
        file_mode: rw-r--r--
      - name: a
        connection: acme
        outgoing: out2
    """
    p = write_yaml(tmp_path, body, jwt=False)
    problems = problems_of(p)
    one_problem(problems, f"{p}:1: settle_time", "soon", "3s")
    one_problem(problems, f"{p}:2: workers", "whole number")
    one_problem(problems, f"{p}:5: connections.acme.jwt_config", "missing.json", "does not exist")
    one_problem(problems, f"{p}:8: post_production[0].connection", "'acmee'", "did you mean 'acme'",
                "defined connections: acme")
    one_problem(problems, f"{p}:10: post_production[0].upload_folder_id", "not a Box folder id")
    one_problem(problems, f"{p}:11: post_production[0].download_folder_id", "root")
    one_problem(problems, f"{p}:13: post_production[0].watch", "did you mean inotify")
    one_problem(problems, f"{p}:14: post_production[0].chunked_threshold", "not a size")
    one_problem(problems, f"{p}:15: post_production[0].file_mode", "octal")
    one_problem(problems, f"{p}:16: post_production[1].name", "already the name of post_production[0]")
    one_problem(problems, "post_production[1].upload_folder_id", "go together")
    assert len(problems) >= 11


@pytest.mark.parametrize("snippet,needles", [
    ("workers: 0", ["workers", "out of range", "1 to 64"]),
    ("workers: true", ["workers", "whole number"]),
    ("workers: 2.5", ["workers", "whole number"]),
    ("long_poll: maybe", ["long_poll", "true or false"]),
    ("include: []", ["include", "matches nothing"]),
    ("include: {a: 1}", ["include", "glob patterns"]),
    ("exclude: [3]", ["exclude", "glob pattern"]),
    ("after_upload: move", ["sent", "after_upload: move needs"]),
    ("after_download: move", ["archive_folder_id", "needs"]),
    ("archive_folder_id: \"5678\"", ["archive_folder_id", "download folder itself"]),
    ("group: no-such-group-cfbox", ["group", "does not exist"]),
    ("settle_time:", ["settle_time", "has no value", "3.0"]),
    ("settle_time: [1, 2]", ["settle_time", "single value"]),
    ("poll_interval: 0s", ["poll_interval", "longer than zero"]),
    ("on_conflict: overwrite", ["on_conflict", "version, rename, skip"]),
])
def test_post_production_value_rejections(tmp_path, snippet, needles):
    body = BASE.replace("    incoming: in", f"    incoming: in\n    {snippet}")
    one_problem(problems_of(write_yaml(tmp_path, body)), "post_production[0].", *needles)


@pytest.mark.parametrize("snippet,needles", [
    ("base_url: ftp://x", ["base_url", "http(s) URL"]),
    ("api_calls_per_minute: -3", ["api_calls_per_minute", "out of range"]),
    ("read_timeout: 0", ["read_timeout", "longer than zero"]),
    ("jwt_config:", ["jwt_config", "required"]),
    ('jwt_config: "credential:"', ["jwt_config", "credential's name"]),
])
def test_connection_value_rejections(tmp_path, snippet, needles):
    body = BASE.replace("    jwt_config: acme-config.json", f"    {snippet}"
                        if snippet.startswith("jwt_config") else
                        f"    jwt_config: acme-config.json\n    {snippet}")
    one_problem(problems_of(write_yaml(tmp_path, body)), "connections.acme.", *needles)


def test_post_production_half_without_partner_names_both_keys(tmp_path):
    body = BASE.replace('    download_folder_id: "5678"\n', "")
    msg = one_problem(problems_of(write_yaml(tmp_path, body)), "post_production[0].download_folder_id")
    assert "`download_folder_id` and `incoming` go together" in msg


def test_post_production_without_any_half(tmp_path):
    body = """
    connections: {acme: {jwt_config: acme-config.json}}
    post_production:
      - name: lonely
    """
    one_problem(problems_of(write_yaml(tmp_path, body)), "post_production[0]",
                "outgoing` + `upload_folder_id")


def test_missing_required_and_bad_sections(tmp_path):
    body = """
    post_production: {name: x}
    delivery:
      - name: "bad name!"
        folder_id: "1"
    """
    p = write_yaml(tmp_path, body)
    problems = problems_of(p)
    one_problem(problems, "connections", "is required")
    one_problem(problems, "post_production", "list of entries")
    one_problem(problems, "delivery[0].name", "not a usable name")
    one_problem(problems, "delivery[0].source", "required but missing")


def test_several_connections_need_explicit_connection(tmp_path):
    make_jwt_json(tmp_path / "other.json")
    body = """
    connections:
      acme: {jwt_config: acme-config.json}
      zeta: {jwt_config: other.json}
    delivery:
      - {name: d, source: final, folder_id: "1"}
    """
    one_problem(problems_of(write_yaml(tmp_path, body)), "delivery[0].connection",
                "one of: acme, zeta")


def test_duplicate_yaml_key(tmp_path):
    body = BASE.replace("state_dir: state", "state_dir: state\nstate_dir: other")
    problems = problems_of(write_yaml(tmp_path, body))
    one_problem(problems, ":2: state_dir", "given twice", "line 1")
    assert len(problems) == 1, problems


def test_problems_come_in_file_order(tmp_path):
    body = BASE.replace('folder_id: "9012"', 'folder_id: "x"').replace("state_dir: state",
                                                                       "state_dir: state\nworkers: 0")
    problems = problems_of(write_yaml(tmp_path, body))
    lines = [int(p.split(":")[1]) for p in problems]
    assert lines == sorted(lines) and len(lines) == 2


def test_upload_folder_equal_to_download_folder(tmp_path):
    body = BASE.replace('folder_id: "9012"', 'folder_id: "5678"')
    one_problem(problems_of(write_yaml(tmp_path, body)), "delivery[0].folder_id",
                "post_production[0].download_folder_id", "straight back")


def test_local_folder_that_is_a_file(tmp_path):
    p = write_yaml(tmp_path, BASE.replace("source: final", "source: afile"))
    (tmp_path / "afile").write_text("x")
    one_problem(problems_of(p), "delivery[0].source", "is a file")


def test_warnings_do_not_fail(tmp_path):
    body = BASE.replace("source: final", "source: not-yet").replace(
        '    folder_id: "9012"', '    folder_id: "9012"\n    chunked_threshold: 1MB\n    sent: s')
    c = cfg.load_config(write_yaml(tmp_path, body))
    text = "\n".join(c.warnings)
    assert "not-yet does not exist" in text
    assert "20 MB minimum" in text
    assert "delivery[0].sent: ignored" in text


# ----------------------------------------------------------------------------- overlaps

@pytest.mark.parametrize("out,inc,needle", [
    ("in/sub", "in", "loop"),
    ("out", "out/back", "loop"),
    ("shared", "shared", "loop"),
])
def test_outgoing_incoming_overlap(tmp_path, out, inc, needle):
    body = BASE.replace("outgoing: out", f"outgoing: {out}").replace("incoming: in", f"incoming: {inc}")
    one_problem(problems_of(write_yaml(tmp_path, body)), "post_production[0]", needle)


def test_two_outgoing_nested(tmp_path):
    body = BASE.replace("source: final", "source: out/final")
    p = write_yaml(tmp_path, body)
    msg = one_problem(problems_of(p), f"{p}:15: delivery[0].source", "post_production[0].outgoing")
    assert "uploaded by two mappings" in msg and "is inside" in msg


def test_overlap_through_symlink(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "in")
    body = BASE.replace("source: final", "source: link/x")
    one_problem(problems_of(write_yaml(tmp_path, body)), "delivery[0].source", "loop")


def test_sent_inside_outgoing_and_state_dir_inside_outgoing(tmp_path):
    body = BASE.replace("state_dir: state", "state_dir: final/.state").replace(
        '    folder_id: "9012"', '    folder_id: "9012"\n    after_upload: move\n    sent: final/sent')
    problems = problems_of(write_yaml(tmp_path, body))
    one_problem(problems, "delivery[0].sent", "uploaded again")
    one_problem(problems, "state_dir", "state database")


_seg = st.sampled_from(["a", "b", "ab"])


@given(st.lists(st.tuples(st.sampled_from(["outgoing", "incoming"]),
                          st.lists(_seg, min_size=1, max_size=3)), min_size=2, max_size=5))
def test_overlap_reported_exactly_for_nested_pairs(entries):
    """outgoing/incoming folders: a problem for each nested or equal pair, none otherwise."""
    folders = [(role, f"k{i}", Path("/s", *parts)) for i, (role, parts) in enumerate(entries)]
    got = {k for k, _ in cfg.overlap_problems(folders)}
    expected = set()
    for i, (_, _, a) in enumerate(folders):
        for _, kb, b in folders[i + 1:]:
            if a == b or a in b.parents or b in a.parents:
                expected.add(kb)
    assert got == expected


def test_overlap_problems_pure():
    f = [("outgoing", "a", Path("/s/a")), ("outgoing", "b", Path("/s/ab")),
         ("incoming", "c", Path("/s/c")), ("incoming", "d", Path("/s/c/d")),
         ("sent", "e", Path("/elsewhere"))]
    got = cfg.overlap_problems(f)
    # /s/a and /s/ab are siblings, not nested (a string prefix is not a parent)
    assert [k for k, _ in got] == ["d"]


# ----------------------------------------------------------------------------- file-level errors

@pytest.mark.parametrize("content,needles", [
    ("", ["the file is empty"]),
    ("# only a comment\n", ["the file is empty"]),
    ("- a\n- b\n", [":1: the top level must be a mapping", "found a list"]),
    ("state_dir: x\nconnections:\n  acme: {jwt_config: [}\n", ["YAML syntax error", ":3:"]),
    ("state_dir: x\n\tconnections: {}\n", ["YAML syntax error", "tabs"]),
    ("a: 1\n---\nb: 2\n", ["YAML syntax error"]),
])
def test_file_level_errors(tmp_path, content, needles):
    p = tmp_path / "c.yaml"
    p.write_text(content)
    one_problem(problems_of(p), str(p), *needles)


def test_missing_and_unreadable_and_non_utf8(tmp_path):
    one_problem(problems_of(tmp_path / "nope.yaml"), "nope.yaml", "not found")
    one_problem(problems_of(tmp_path), "is a folder")
    bad = tmp_path / "bin.yaml"
    bad.write_bytes(b"state_dir: x\nname: \xff\xfe\n")
    one_problem(problems_of(bad), "bin.yaml:2", "UTF-8")
    if os.getuid() != 0:
        locked = write_yaml(tmp_path, BASE, name="locked.yaml")
        locked.chmod(0)
        one_problem(problems_of(locked), "locked.yaml", "not readable")


# ----------------------------------------------------------------------------- config.json

@pytest.mark.parametrize("kwargs,needle", [
    (dict(drop=("boxAppSettings.clientSecret",)), "boxAppSettings.clientSecret is missing"),
    (dict(drop=("boxAppSettings.appAuth.publicKeyID",)), "boxAppSettings.appAuth.publicKeyID is missing"),
    (dict(drop=("enterpriseID",)), "enterpriseID is missing"),
    (dict(drop=("boxAppSettings",)), "boxAppSettings is missing"),
    (dict(enterpriseID="acme corp"), "enterpriseID should be the enterprise's number"),
    (dict(boxAppSettings__clientID=""), "boxAppSettings.clientID should be a non-empty string"),
    (dict(key_pass="another passphrase"), "passphrase does not open the private key"),
    (dict(boxAppSettings__appAuth__privateKey="-----BEGIN NONSENSE-----"), "not a readable PEM"),
])
def test_bad_jwt_config_json(tmp_path, kwargs, needle):
    make_jwt_json(tmp_path / "acme-config.json", **kwargs)
    msg = one_problem(problems_of(write_yaml(tmp_path, BASE)), "connections.acme.jwt_config",
                      "acme-config.json", needle)
    assert PASSPHRASE not in msg and CLIENT_SECRET not in msg and "PRIVATE KEY-----\n" not in msg


def test_unencrypted_and_non_rsa_keys_rejected(tmp_path):
    j = make_jwt_json(tmp_path / "acme-config.json")
    data = json.loads(j.read_text())
    data["boxAppSettings"]["appAuth"]["privateKey"] = _rsa_pem(None)
    j.write_text(json.dumps(data))
    one_problem(problems_of(write_yaml(tmp_path, BASE)), "not encrypted")
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(PASSPHRASE.encode())).decode()
    data["boxAppSettings"]["appAuth"]["privateKey"] = ec_pem
    j.write_text(json.dumps(data))
    one_problem(problems_of(tmp_path / "cfbox.yaml"), "RSA")


def test_jwt_json_not_json_or_not_object(tmp_path):
    j = tmp_path / "acme-config.json"
    j.write_text('{"boxAppSettings": {,}')
    one_problem(problems_of(write_yaml(tmp_path, BASE)), "acme-config.json:1: not valid JSON")
    j.write_text("[1, 2]")
    one_problem(problems_of(tmp_path / "cfbox.yaml"), "expected a JSON object")


def test_jwt_json_group_readable_warns(tmp_path):
    make_jwt_json(tmp_path / "acme-config.json", mode=0o644)
    c = cfg.load_config(write_yaml(tmp_path, BASE))
    w = one_problem(list(c.warnings), "connections.acme.jwt_config", "readable by group and others",
                    "chmod 600")
    assert "0644" in w


@pytest.mark.skipif(os.getuid() == 0, reason="root reads every file")
def test_jwt_json_unreadable(tmp_path):
    make_jwt_json(tmp_path / "acme-config.json", mode=0o000)
    one_problem(problems_of(write_yaml(tmp_path, BASE)), "acme-config.json", "not readable")


def test_read_jwt_config_returns_redacted_dict(tmp_path):
    c = cfg.load_config(write_yaml(tmp_path, BASE))
    data = cfg.read_jwt_config(c.connections["acme"])
    assert data["boxAppSettings"]["clientSecret"] == CLIENT_SECRET
    assert data["boxAppSettings"]["appAuth"]["passphrase"] == PASSPHRASE
    shown = repr(data) + str(data) + repr(data["boxAppSettings"])
    assert CLIENT_SECRET not in shown and PASSPHRASE not in shown and "PRIVATE KEY" not in shown
    assert "abc123clientid" in shown
    assert json.loads(json.dumps(data))["enterpriseID"] == "998877"
    (tmp_path / "acme-config.json").write_text("{}")
    with pytest.raises(ConfigError) as info:
        cfg.read_jwt_config(c.connections["acme"])
    assert "connections.acme.jwt_config" in str(info.value)


def test_jwt_json_loads_with_box_sdk(tmp_path):
    """What the validator accepts, box_sdk_gen can open (its own key decryptor)."""
    from box_sdk_gen.box.jwt_auth import JWTConfig
    from box_sdk_gen.internal.utils import DefaultPrivateKeyDecryptor

    j = make_jwt_json(tmp_path / "acme-config.json")
    config = JWTConfig.from_config_file(config_file_path=str(j))
    DefaultPrivateKeyDecryptor().decrypt_private_key(config.private_key,
                                                     config.private_key_passphrase)


# ----------------------------------------------------------------------------- credentials

def test_credential_path_reads_credentials_directory(tmp_path, monkeypatch):
    creds = tmp_path / "creds"
    creds.mkdir()
    make_jwt_json(creds / "acme-config.json", mode=0o400)
    body = BASE.replace("jwt_config: acme-config.json", "jwt_config: credential:acme-config.json")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    c = cfg.load_config(write_yaml(tmp_path, body, jwt=False))
    assert c.connections["acme"].jwt_config == creds / "acme-config.json"
    assert cfg.read_jwt_config(c.connections["acme"])["enterpriseID"] == "998877"


def test_credential_without_credentials_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    body = BASE.replace("jwt_config: acme-config.json", "jwt_config: credential:acme-config.json")
    msg = one_problem(problems_of(write_yaml(tmp_path, body, jwt=False)),
                      "connections.acme.jwt_config", "CREDENTIALS_DIRECTORY")
    assert "LoadCredential=acme-config.json:" in msg


def test_credential_missing_in_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "empty"))
    body = BASE.replace("jwt_config: acme-config.json", "jwt_config: credential:acme-config.json")
    one_problem(problems_of(write_yaml(tmp_path, body, jwt=False)), "does not exist")


# ----------------------------------------------------------------------------- the CLI path

def test_cli_exit_78_all_problems_no_traceback_no_secret(tmp_path):
    make_jwt_json(tmp_path / "acme-config.json", key_pass="not the passphrase")
    body = BASE.replace("settle_time", "x").replace('upload_folder_id: "1234"',
                                                    "upload_folder_id: folder-a").replace(
        "source: final", "source: out/inside")
    p = write_yaml(tmp_path, body)
    r = run_check_offline(p)
    assert r.returncode == EX_CONFIG, r.stderr
    err = r.stderr
    assert "Traceback" not in err and "Traceback" not in r.stdout
    lines = [line for line in err.splitlines() if line]
    assert all(line.startswith(f"cfbox-watch: {p}") for line in lines), err
    assert "post_production[0].upload_folder_id" in err
    assert "passphrase does not open" in err
    assert "delivery[0].source" in err
    assert PASSPHRASE not in err and CLIENT_SECRET not in err and "not the passphrase" not in err


@pytest.mark.parametrize("content", ["", "[1]\n", "a: [\n", "connections: {}\n"])
def test_cli_file_level_errors_exit_78(tmp_path, content):
    p = tmp_path / "c.yaml"
    p.write_text(content)
    r = run_check_offline(p)
    assert r.returncode == EX_CONFIG and "Traceback" not in r.stderr
    assert str(p) in r.stderr


def test_cli_missing_config_file_exit_78(tmp_path):
    r = run_check_offline(tmp_path / "absent.yaml")
    assert r.returncode == EX_CONFIG and "not found" in r.stderr and "Traceback" not in r.stderr


# ----------------------------------------------------------------------------- the example

def test_documented_example_loads(tmp_path):
    """etc/cfbox.yaml loads once its config.json files exist; its paths are made
    relative to a scratch folder so that the test needs no /srv or /etc."""
    text = (REPO / "etc" / "cfbox.yaml").read_text()
    text = text.replace("/etc/cfbox/", "./").replace("/srv/studio/", "./studio/").replace(
        "/var/lib/cfbox-watch", "./state")
    assert "/srv/" not in text and "/etc/" not in text
    p = tmp_path / "cfbox.yaml"
    p.write_text(text)
    for name in _jwt_files_named_in(text):
        make_jwt_json(tmp_path / name)
    c = cfg.load_config(p)
    assert [m.name for m in c.outgoing] == ["acme-retouch", "cf-vendor", "cf-vendor/rejection",
                                            "brand-final"]
    assert [m.name for m in c.incoming] == ["acme-retouch", "cf-vendor"]
    # the example states every default: what it says must be what the code uses
    assert (c.settle_time, c.poll_interval, c.workers, c.log_level, c.shutdown_grace) == (
        3.0, 60.0, 4, "info", 20.0)
    conn = c.connections["acme"]
    assert conn == Connection(name="acme", jwt_config=conn.jwt_config, base_url=conn.base_url,
                              upload_url=conn.upload_url)
    out, inc = c.outgoing[0], c.incoming[0]
    assert out == OutgoingMapping(name=out.name, kind=out.kind, connection=out.connection,
                                  local=out.local, folder_id=out.folder_id, key_path=out.key_path)
    assert inc == IncomingMapping(name=inc.name, connection=inc.connection,
                                  folder_id=inc.folder_id, local=inc.local, key_path=inc.key_path)
    assert c.outgoing[-1].after_upload == "move" and c.outgoing[-1].sent_dir == tmp_path / "studio/sent/brand"
    assert not [w for w in c.warnings if "ignored" in w], c.warnings


def _jwt_files_named_in(text: str) -> list[str]:
    import re

    return sorted(set(re.findall(r"jwt_config:\s*\./([\w.-]+)", text)))


def test_documented_example_mentions_every_key():
    text = (REPO / "etc" / "cfbox.yaml").read_text()
    keys = (set(cfg.TOP_SCHEMA) | set(cfg.TOP_SECTIONS) | set(cfg.CONNECTION_SCHEMA)
            | set(cfg.PP_SCHEMA) | set(cfg.DELIVERY_SCHEMA))
    missing = sorted(k for k in keys if f"{k}:" not in text)
    assert not missing, f"etc/cfbox.yaml does not document: {missing}"
    doc = (REPO / "docs" / "configuration.md").read_text()
    missing = sorted(k for k in keys if f"`{k}`" not in doc)
    assert not missing, f"docs/configuration.md does not document: {missing}"


def test_cli_credential_directory(tmp_path):
    creds = tmp_path / "creds"
    creds.mkdir()
    make_jwt_json(creds / "acme-config.json", mode=0o400)
    body = BASE.replace("jwt_config: acme-config.json", "jwt_config: credential:acme-config.json")
    p = write_yaml(tmp_path, body, jwt=False)
    ok = run_check_offline(p, env={"CREDENTIALS_DIRECTORY": str(creds)})
    assert ok.returncode == 0, ok.stderr
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    bad = subprocess.run([sys.executable, "-m", "cfbox_watch", "-c", str(p), "check", "--offline"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == EX_CONFIG and "CREDENTIALS_DIRECTORY" in bad.stderr
    assert "Traceback" not in bad.stderr

"""Config keys of the Creative Force workflow: what they build, and the messages for
mistakes (file:line: key: what is wrong; what would be right)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cfbox_watch import config as cfg
from cfbox_watch.config_model import CompletionLog
from cfbox_watch.daemon import side_specs
from test_config import REPO, make_jwt_json, problems_of, write_yaml

HEAD = """
state_dir: state
connections:
  acme:
    jwt_config: acme-config.json
post_production:
  - name: v
    outgoing: out
    upload_folder_id: "1"
    download_folder_id: "2"
    incoming: in
"""


def load(tmp_path: Path, extra: str):
    (tmp_path / "rej").mkdir(exist_ok=True)
    return write_yaml(tmp_path, HEAD + extra)


def test_full_entry_builds_three_halves_and_the_cf_side(tmp_path):
    p = load(tmp_path, """
    rejected: rej
    rejection_folder_id: "3"
    after_download: move
    archive_folder_id: "4"
    accept: ["*.tif"]
    invalid_folder_id: "5"
    completion_log: {quiet: 2m, name: "{batch}_{mapping}_transfer_completed.log"}
    match: filename+folder
    return_due: 2d
""".replace("\n    ", "\n    "))
    c = cfg.load_config(p)
    assert [(m.name, m.kind, m.folder_id) for m in c.outgoing] == [
        ("v", "post_production", "1"), ("v/rejection", "rejection", "3")]
    assert c.outgoing[1].local == tmp_path / "rej"
    (inc,) = c.incoming
    assert inc.accept == ("*.tif",) and inc.invalid_folder_id == "5"
    (cf,) = c.creative_force
    assert cf.completion_log == CompletionLog(120.0, "{batch}_{mapping}_transfer_completed.log")
    assert (cf.match, cf.return_due) == ("filename+folder", 172800.0)
    assert cf.outgoing is c.outgoing[0] and cf.rejection is c.outgoing[1] and cf.incoming is inc
    assert sorted(side_specs(c)) == ["v/rejection:out", "v:cf", "v:in", "v:out"]


def test_plain_entry_gets_round_trip_tracking_with_defaults(tmp_path):
    c = cfg.load_config(write_yaml(tmp_path, HEAD))
    (cf,) = c.creative_force
    assert (cf.match, cf.return_due, cf.completion_log, cf.rejection) == ("filename", None, None, None)
    assert c.incoming[0].accept == ("*",)


def test_completion_log_true_means_defaults(tmp_path):
    c = cfg.load_config(load(tmp_path, "    completion_log: true\n"))
    assert c.creative_force[0].completion_log == CompletionLog()


@pytest.mark.parametrize("extra, key, words", [
    ('    rejected: rej\n', "post_production[0].rejection_folder_id", "go together"),
    ('    rejection_folder_id: "3"\n', "post_production[0].rejected", "go together"),
    ('    rejected: rej\n    rejection_folder_id: "1"\n', "post_production[0].rejection_folder_id",
     "Rejection folder"),
    ('    completion_log: {name: "{product}.log"}\n', "post_production[0].completion_log",
     "{batch} and {mapping}"),
    ('    completion_log: {name: "done.log"}\n', "post_production[0].completion_log", "lacks {batch}"),
    ('    completion_log: {name: "{batch}/x.log"}\n', "post_production[0].completion_log", "Box refuses"),
    ('    completion_log: {quiet: soon}\n', "post_production[0].completion_log", "quiet:"),
    ('    completion_log: {wait: 5m}\n', "post_production[0].completion_log", "quiet and name"),
    ('    match: fuzzy\n', "post_production[0].match", "filename"),
    ('    return_due: 0s\n', "post_production[0].return_due", "longer than zero"),
    ('    accept: []\n', "post_production[0].accept", "refuses every return"),
    ('    invalid_folder_id: "2"\n    accept: ["*.tif"]\n', "post_production[0].invalid_folder_id",
     "download folder itself"),
    ('    rejected: out/rej\n    rejection_folder_id: "3"\n', "post_production[0].rejected",
     "uploaded by two mappings"),
])
def test_mistakes_are_named(tmp_path, extra, key, words):
    (tmp_path / "out" / "rej").mkdir(parents=True, exist_ok=True)
    problems = problems_of(load(tmp_path, extra))
    hits = [p for p in problems if f": {key}:" in p]
    assert hits and any(words in p for p in hits), problems


def test_completion_log_needs_the_outgoing_half(tmp_path):
    p = write_yaml(tmp_path, """
state_dir: state
connections:
  acme:
    jwt_config: acme-config.json
post_production:
  - name: v
    download_folder_id: "2"
    incoming: in
    completion_log: true
""")
    problems = problems_of(p)
    assert any("post_production[0].completion_log" in x and "outgoing half" in x for x in problems)


def test_creative_force_keys_in_a_delivery_entry_are_explained(tmp_path):
    p = write_yaml(tmp_path, """
state_dir: state
connections:
  acme:
    jwt_config: acme-config.json
delivery:
  - name: d
    source: final
    folder_id: "9"
    completion_log: true
""")
    problems = problems_of(p)
    assert any("delivery[0].completion_log" in x and "only post_production" in x for x in problems)


def test_invalid_folder_with_accept_everything_warns(tmp_path):
    c = cfg.load_config(load(tmp_path, '    invalid_folder_id: "5"\n'))
    assert any("invalid_folder_id" in w and "never used" in w for w in c.warnings)


def test_preset_in_etc_loads_as_a_creative_force_vendor(tmp_path):
    text = (REPO / "etc" / "cfbox.yaml").read_text()
    text = text.replace("/etc/cfbox/", "./").replace("/srv/studio/", "./studio/").replace(
        "/var/lib/cfbox-watch", "./state")
    (tmp_path / "cfbox.yaml").write_text(text)
    make_jwt_json(tmp_path / "acme-config.json")
    c = cfg.load_config(tmp_path / "cfbox.yaml")
    cf = {x.name: x for x in c.creative_force}["cf-vendor"]
    assert cf.rejection is not None and cf.rejection.folder_id == "2003"
    assert cf.incoming.after_download == "move" and cf.incoming.archive_folder_id == "2004"
    assert cf.incoming.invalid_folder_id == "2005" and "*.tif" in cf.incoming.accept
    assert cf.completion_log == CompletionLog(300.0, "{batch}_transfer_completed.log")


def test_rejection_half_moves_sent_files_below_sent_rejection(tmp_path):
    (tmp_path / "sent").mkdir()
    c = cfg.load_config(load(tmp_path, '    rejected: rej\n    rejection_folder_id: "3"\n'
                                       '    after_upload: move\n    sent: sent\n'))
    main, rej = c.outgoing
    assert main.sent_dir == tmp_path / "sent" and rej.sent_dir == tmp_path / "sent" / "rejection"


def test_completion_log_false_is_off(tmp_path):
    c = cfg.load_config(load(tmp_path, "    completion_log: false\n"))
    assert c.creative_force[0].completion_log is None
    problems = problems_of(load(tmp_path, "    completion_log: soon\n"))
    assert any("completion_log" in p and "`true`, `false` or a mapping" in p for p in problems)


def test_status_before_any_run_shows_an_empty_round_trip(tmp_path):
    import json
    import subprocess
    import sys

    p = write_yaml(tmp_path, HEAD + "    return_due: 1d\n")
    out = subprocess.run([sys.executable, "-m", "cfbox_watch", "-c", str(p), "status", "--json"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    (rtp,) = json.loads(out.stdout)["round_trip"]
    assert (rtp["name"], rtp["sent"], rtp["outstanding"], rtp["batches"], rtp["return_due"],
            rtp["state"]) == ("v", 0, 0, [], 86400.0, "not running")


def test_check_names_the_rejection_and_invalid_folders_by_their_own_keys(tmp_path):
    from cfbox_watch.check import folder_checks

    p = load(tmp_path, """
    rejected: rej
    rejection_folder_id: "3"
    accept: ["*.tif"]
    invalid_folder_id: "5"
""")
    checks = folder_checks(cfg.load_config(p))["acme"]
    assert [(c.key_path, c.role, c.folder_id) for c in checks] == [
        ("post_production[0].upload_folder_id", "upload", "1"),
        ("post_production[0].rejection_folder_id", "rejection", "3"),
        ("post_production[0].download_folder_id", "download", "2"),
        ("post_production[0].invalid_folder_id", "invalid", "5"),
    ]

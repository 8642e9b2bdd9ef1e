"""Scenario 10, bad configuration: broken cfbox.yaml and config.json files make `run`
exit 78 with a message naming the key or file (never a traceback, never a secret), and
a broken reload keeps the running daemon on its old configuration."""

from __future__ import annotations

import copy
import json
import signal
import time

import yaml

from harness import report, sha1, wait_until, write_out

RESULTS: list[str] = []


def _yaml_cases(s, emu):
    """(id, how to break the config dict or raw text, text the message must contain)."""
    up, down = emu.folders["upload"], emu.folders["download"]
    e = "post_production"
    return [
        ("not-yaml", "connections: [unclosed\n  : :", "cfbox.yaml"),
        ("empty-file", "", "cfbox.yaml"),
        ("top-level-list", "- a\n- b\n", "cfbox.yaml"),
        ("no-connections", lambda c: c.pop("connections"), "connections"),
        ("unknown-top-key", lambda c: c.update(setle_time="3s"), "setle_time"),
        ("bad-duration", lambda c: c.update(settle_time="fast"), "settle_time"),
        ("workers-zero", lambda c: c.update(workers=0), "workers"),
        ("workers-huge", lambda c: c.update(workers=1000), "workers"),
        ("log-level", lambda c: c.update(log_level="loud"), "log_level"),
        ("poll-zero", lambda c: c.update(poll_interval="0s"), "poll_interval"),
        ("root-folder-id", lambda c: c[e][0].update(upload_folder_id="0"), "upload_folder_id"),
        ("letters-folder-id", lambda c: c[e][0].update(upload_folder_id="abc"), "upload_folder_id"),
        ("half-missing", lambda c: c[e][0].pop("upload_folder_id"), "upload_folder_id"),
        ("same-box-folder", lambda c: c[e][0].update(upload_folder_id=down), "upload_folder_id"),
        ("duplicate-name", lambda c: c[e].append(dict(c[e][0], outgoing=str(s.root / "o2"),
                                                        incoming=str(s.root / "i2"))), "name"),
        ("out-equals-in", lambda c: c[e][0].update(incoming=c[e][0]["outgoing"]), "incoming"),
        ("state-in-out", lambda c: c.update(state_dir=str(s.out / "state")), "state_dir"),
        ("on-conflict", lambda c: c[e][0].update(on_conflict="overwrite-all"), "on_conflict"),
        ("move-without-sent", lambda c: c[e][0].update(after_upload="move"), "sent"),
        ("file-mode", lambda c: c[e][0].update(file_mode="999"), "file_mode"),
        ("unknown-connection", lambda c: c[e][0].update(connection="nope"), "connection"),
        ("no-such-group", lambda c: c[e][0].update(group="no-such-group-xyz"), "group"),
        ("jwt-config-missing", lambda c: c["connections"]["emu"].update(jwt_config=str(s.root / "gone.json")),
         "gone.json"),
        ("credential-without-dir", lambda c: c["connections"]["emu"].update(jwt_config="credential:acme.json"),
         "CREDENTIALS_DIRECTORY"),
        ("include-empty", lambda c: c[e][0].update(include=[]), "include"),
        ("incoming-key-in-delivery", lambda c: c.update(delivery=[{
            "name": "d", "source": str(s.root / "d"), "folder_id": up, "incoming": str(s.root / "x")}]), "incoming"),
    ]


def _json_cases(good: dict):
    def set_path(d, path, value):
        for k in path[:-1]:
            d = d[k]
        if value is KeyError:
            d.pop(path[-1])
        else:
            d[path[-1]] = value
    app = ("boxAppSettings",)
    return [
        ("json-not-json", "{not json", "config.json"),
        ("json-no-secret", (app + ("clientSecret",), KeyError), "clientSecret"),
        ("json-no-client-id", (app + ("clientID",), KeyError), "clientID"),
        ("json-wrong-passphrase", (app + ("appAuth", "passphrase"), "not-the-passphrase"), "passphrase"),
        ("json-garbage-key", (app + ("appAuth", "privateKey"), "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n"),
         "privateKey"),
        ("json-no-enterprise", (("enterpriseID",), KeyError), "enterpriseID"),
        ("json-list", "[1, 2]", "config.json"),
    ], set_path


def _assert_clean_config_error(res, must, case):
    text = res.stdout + res.stderr
    assert res.returncode == 78, f"{case}: exit {res.returncode}\n{text}"
    assert "Traceback" not in text, f"{case}: traceback\n{text}"
    assert must in text, f"{case}: the message does not name {must!r}:\n{text}"
    assert len(text.strip().splitlines()) <= 8, f"{case}: not one clear message:\n{text}"
    RESULTS.append(f"{case}: {text.strip().splitlines()[0]}")


def test_broken_configs_exit_78_naming_the_key_or_file(studio, emulator):
    s = studio()
    good = copy.deepcopy(s.config)
    cases = _yaml_cases(s, emulator)
    for case, breaker, must in cases:
        if isinstance(breaker, str):
            s.cfg_path.write_text(breaker)
        else:
            cfg = copy.deepcopy(good)
            breaker(cfg)
            s.cfg_path.write_text(yaml.safe_dump(cfg))
        _assert_clean_config_error(s.cli("run", timeout=30), must, case)

    good_json = json.loads(emulator.config_path.read_text())
    json_cases, set_path = _json_cases(good_json)
    bad_json = s.root / "config.json"
    for case, breaker, must in json_cases:
        if isinstance(breaker, str):
            bad_json.write_text(breaker)
        else:
            d = copy.deepcopy(good_json)
            set_path(d, *breaker)
            bad_json.write_text(json.dumps(d))
        bad_json.chmod(0o600)
        cfg = copy.deepcopy(good)
        cfg["connections"]["emu"]["jwt_config"] = str(bad_json)
        s.cfg_path.write_text(yaml.safe_dump(cfg))
        _assert_clean_config_error(s.cli("run", timeout=30), must, case)
    s.config = good
    s.write_config()
    report("bad_config", cases=len(cases) + len(json_cases), exit_78=len(RESULTS), tracebacks=0,
           secrets_in_output=0)
    print("\n".join(r.replace(str(s.root), "STUDIO") for r in RESULTS))


def test_broken_reload_keeps_the_old_config_running(studio, emulator):
    s = studio(inc=False)
    proc = s.start()
    write_out(s.out, "before.bin", b"a" * 1000)
    wait_until(lambda: "before.bin" in s.box_out(), 60, "the first upload")
    s.cfg_path.write_text(s.cfg_path.read_text() + "\nworkers: many\n")
    proc.send_signal(signal.SIGHUP)
    time.sleep(2.0)
    assert proc.poll() is None, "a broken reload must not stop the daemon:\n" + s.daemon_output()[-2000:]
    write_out(s.out, "after.bin", b"b" * 1000)
    wait_until(lambda: "after.bin" in s.box_out(), 60, "an upload after the broken reload")
    out = s.daemon_output()
    assert "workers" in out and "Traceback" not in out
    assert s.stop(proc) == 0
    s.assert_outgoing_exact({"before.bin": sha1(b"a" * 1000),
                             "after.bin": sha1(b"b" * 1000)})

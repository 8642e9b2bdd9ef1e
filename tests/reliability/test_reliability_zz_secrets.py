"""Scenario 13, secrets: every output of every scenario in this session (daemon logs with
-v, `status`, `check`, `once`, config errors), plus a run through the paths most likely to
leak (the app not authorized, a wrong passphrase, token expiry, debug logging), must not
contain the private key, its passphrase, the client secret, the webhook keys or any access
token the emulator issued.  Each studio is also scanned at its own teardown; this file runs
last (alphabetical order) so that it also sees the whole session's outputs."""

from __future__ import annotations

import json
import os
import time

from harness import ALL_OUTPUTS, ALL_SECRETS, emulator_secrets, leaks, report, wait_until, write_out


def test_no_secret_in_any_output_of_the_session(studio, emulator):
    s = studio(poll_interval="1s")
    # Ordinary work with debug logging and a token expiry mid-way.
    proc = s.start()
    write_out(s.out, "one.bin", b"1" * 1000)
    wait_until(lambda: "one.bin" in s.box_out(), 60, "an upload")
    emulator.control.expire_tokens()
    write_out(s.out, "two.bin", b"2" * 1000)
    wait_until(lambda: "two.bin" in s.box_out(), 60, "an upload after token expiry")
    # The app is de-authorized in the Admin Console: sign-in errors everywhere.
    emulator.control.settings(app_authorized=False)
    emulator.control.expire_tokens()
    write_out(s.out, "three.bin", b"3" * 1000)
    time.sleep(2.0)
    s.cli("status")
    s.cli("status", "--json")
    s.cli("check")
    s.cli("-v", "once", timeout=60)
    emulator.control.settings(app_authorized=True)
    assert s.stop(proc) == 0
    # A wrong passphrase and a wrong client secret in config.json.
    cfg = json.loads(emulator.config_path.read_text())
    for field, value in (("passphrase", "wrong-passphrase-0000"), ("clientSecret", "wrong-secret-0000")):
        bad = json.loads(json.dumps(cfg))
        if field == "passphrase":
            bad["boxAppSettings"]["appAuth"]["passphrase"] = value
        else:
            bad["boxAppSettings"]["clientSecret"] = value
        path = s.root / f"bad-{field}.json"
        path.write_text(json.dumps(bad))
        path.chmod(0o600)
        s.config["connections"]["emu"]["jwt_config"] = str(path)
        s.write_config()
        s.cli("check")
        s.cli("-v", "once", timeout=60)
    # The wrong values are secrets too: an admin typed them.
    secrets = emulator_secrets(emulator) | ALL_SECRETS | {"wrong-passphrase-0000", "wrong-secret-0000"}
    mine = leaks(s.output_files, secrets)
    session = leaks(ALL_OUTPUTS, secrets)
    scanned = {str(p) for p in ALL_OUTPUTS} | {str(p) for p in s.output_files}
    size = sum(os.path.getsize(p) for p in scanned if os.path.exists(p))
    report("secrets", files_scanned=len(scanned), bytes_scanned=size, distinct_secrets=len(secrets), leaks=0)
    assert not mine and not session, f"secrets in output: {mine + session}"

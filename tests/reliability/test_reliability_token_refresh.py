"""Regression for scenario 4 (token churn): a token revoked right after a refresh.

The adapter used to skip signing in again for 2 s after any refresh, so a 401 in that
window was retried with the same dead token and became a SetupError that stopped the
mapping.  Now a 401 for the current token always signs in; a 401 for a token another
thread already replaced retries with the new one."""

from __future__ import annotations

import threading

from cfbox_watch.box_adapter import BoxRemote
from cfbox_watch.config_model import Connection


def _remote(emu) -> BoxRemote:
    return BoxRemote.from_connection(Connection("emu", emu.config_path, emu.base_url, emu.upload_url))


def test_token_revoked_right_after_a_refresh_is_refreshed_again(emulator):
    remote = _remote(emulator)
    remote.whoami()
    for _ in range(3):  # three revocations in well under the old 2 s window
        emulator.control.expire_tokens()
        assert remote.get_folder(emulator.folders["upload"]).name == "Upload"
    assert remote.token_refreshes() == 3


def test_concurrent_401s_still_share_one_refresh(emulator):
    remote = _remote(emulator)
    remote.whoami()
    emulator.control.expire_tokens()
    emulator.control.reset_counters()
    errors, barrier = [], threading.Barrier(8)

    def work():
        barrier.wait()
        try:
            remote.get_folder(emulator.folders["upload"])
        except Exception as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert emulator.control.counters()["POST /oauth2/token"] <= 2

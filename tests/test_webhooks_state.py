"""The webhooks tables: replay memory and registrations, on a real SQLite state DB."""

from __future__ import annotations

from cfbox_watch.db import open_db
from cfbox_watch.webhooks import state


def test_first_sighting_and_pruning(tmp_path):
    conn = open_db(tmp_path / "s.sqlite3")
    state.ensure(conn)
    state.ensure(conn)   # idempotent
    t0 = 1_000_000.0
    assert state.first_sighting(conn, "a", "d1", "FILE.UPLOADED", "9", t0)
    assert not state.first_sighting(conn, "a", "d2", "FILE.UPLOADED", "9", t0 + 5)   # replay, new delivery id
    # a day later, enough new deliveries to trigger a prune: "a" is forgotten
    later = t0 + state.KEEP_DELIVERIES + 10
    for i in range(state.PRUNE_EVERY):
        state.first_sighting(conn, f"n{i}", None, None, None, later)
    ids = {r[0] for r in conn.execute("SELECT body_id FROM webhook_deliveries")}
    assert "a" not in ids and len(ids) == state.PRUNE_EVERY
    conn.close()


def test_registrations_roundtrip(tmp_path):
    conn = open_db(tmp_path / "s.sqlite3")
    state.ensure(conn)
    state.save_registration(conn, "emu", "10", "w1", "https://a/h", "acme")
    state.save_registration(conn, "emu", "10", "w2", "https://b/h", "acme")     # replaced, not added
    state.save_registration(conn, "other", "10", "w9", "https://c/h", "x")
    assert state.registrations(conn, "emu") == {"10": {"webhook_id": "w2", "address": "https://b/h", "mapping": "acme"}}
    state.drop_registration(conn, "emu", "10")
    assert state.registrations(conn, "emu") == {} and "10" in state.registrations(conn, "other")
    conn.close()


def test_refusal_log_gate():
    from cfbox_watch.webhooks.receiver import LogGate

    g = LogGate(burst=3, window=60)
    assert [g.admit(t) for t in (0, 1, 2)] == [(True, 0)] * 3
    assert [g.admit(t) for t in (3, 4)] == [(False, 0)] * 2
    assert g.admit(61) == (True, 2)      # the next window reports what was held back
    assert g.admit(62) == (True, 0)

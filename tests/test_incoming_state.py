"""The incoming tables on a real SQLite file: queue, status summary, retry, stream."""

from __future__ import annotations

import time

from cfbox_watch.db import open_db
from cfbox_watch.incoming import state
from cfbox_watch.incoming.planner import RemoteFile


def db(tmp_path):
    conn = open_db(tmp_path / "state.sqlite3")
    state.ensure(conn)
    return conn


def test_queue_claim_place_and_summary(tmp_path):
    conn = db(tmp_path)
    rf = RemoteFile("11", ("shoot", "a.jpg"), "aa", "v1", 3, "5")
    state.enqueue(conn, "acme", rf)
    assert state.due(conn, "acme", time.time()) == ["11"]
    row = state.claim(conn, "acme", "11")
    assert row.status == "active" and row.attempts == 1
    assert state.claim(conn, "acme", "11") is None  # never two claimants
    state.enqueue(conn, "acme", rf)  # a listing meanwhile does not steal it back
    assert state.get(conn, "acme", "11").status == "active"
    state.mark_placed(conn, "acme", "11", relpath="shoot/a.jpg", sha1="aa", version_id="v1", size=3,
                      local_size=3, local_mtime_ns=5, after_pending=True)
    s = state.summarize(conn, "acme")
    assert (s["queued"], s["active"], s["failed"], s["done_today"], s["after_pending"]) == (0, 0, 0, 1, 1)
    assert s["last_success"].endswith("+00:00")
    state.mark_after(conn, "acme", "11", "done")
    assert state.after_pending(conn, "acme") == []
    assert state.records(conn, "acme")["11"].seen_sha1 == "aa"


def test_failed_rows_and_requeue(tmp_path):
    conn = db(tmp_path)
    for fid, name in (("1", "a.jpg"), ("2", "b.jpg")):
        state.enqueue(conn, "acme", RemoteFile(fid, (name,), "s" + fid))
        state.claim(conn, "acme", fid)
        state.mark_failed(conn, "acme", fid, "cannot write into /x: No space left", time.time() + 3600)
    state.reject(conn, "other", RemoteFile("3", ("..",), "s3"), "unsafe name '..'")
    assert state.due(conn, "acme", time.time()) == []
    s = state.summarize(conn, "acme")
    assert s["failed"] == 2 and s["failures"][0]["error"].startswith("cannot write")
    assert state.requeue_failed(conn, "acme", ["b.jpg"]) == 1
    assert state.due(conn, "acme", time.time()) == ["2"]
    assert state.requeue_failed(conn) == 3  # both acme rows (still failed, due now) + the rejected one
    assert state.get(conn, "other", "3").status == "pending"


def test_summary_on_a_db_without_incoming_tables(tmp_path):
    conn = open_db(tmp_path / "fresh.sqlite3")
    assert state.summarize(conn, "x")["queued"] == 0
    assert state.requeue_failed(conn) == 0


def test_stream_position_and_event_dedup_persist(tmp_path):
    conn = db(tmp_path)
    assert state.stream_position(conn, "k") is None
    state.save_stream(conn, "k", "100", ["e1", "e2"])
    conn.close()
    conn = open_db(tmp_path / "state.sqlite3")
    assert state.stream_position(conn, "k") == "100"
    assert state.unseen(conn, "k", ["e1", "e3"]) == {"e3"}
    assert state.unseen(conn, "other", ["e1"]) == {"e1"}


def test_folders_replace_subtree(tmp_path):
    conn = db(tmp_path)
    state.save_folders(conn, "m", [("1", "", None, None, None), ("2", "a", "1", "0", None),
                                   ("3", "a/b", "2", "0", None), ("4", "ab", "1", "0", None)],
                       replace_under="")
    state.save_folders(conn, "m", [("2", "a", "1", "1", None)], replace_under="a")
    assert state.folder_paths(conn, "m") == {"1": "", "2": "a", "4": "ab"}


def test_a_stale_listing_does_not_requeue_a_finished_version(tmp_path):
    conn = db(tmp_path)
    rf = RemoteFile("1", ("a.jpg",), "AA", "v1", 3)
    state.enqueue(conn, "m", rf)
    state.claim(conn, "m", "1")
    state.mark_placed(conn, "m", "1", relpath="a.jpg", sha1="aa", version_id="v1", size=3,
                      local_size=3, local_mtime_ns=1, after_pending=False)
    state.enqueue(conn, "m", rf)  # a listing that saw the row before it was done
    assert state.get(conn, "m", "1").status == "done"
    state.enqueue(conn, "m", RemoteFile("1", ("a.jpg",), "bb", "v2", 3))  # a real new version
    assert state.get(conn, "m", "1").status == "pending"

"""Pure rules of the Creative Force workflow: round-trip matching, accept patterns,
completion-log decisions (no Box, no disk)."""

from __future__ import annotations

import hashlib

from hypothesis import given, strategies as st

from cfbox_watch.creative_force import completion_log as cl
from cfbox_watch.creative_force import roundtrip as rt


def test_stem_rules():
    assert rt.split_stem("a.jpg") == ("a", ".jpg")
    assert rt.split_stem("a.b.tif") == ("a.b", ".tif")
    assert rt.split_stem(".hidden") == (".hidden", "")
    assert rt.split_stem("noext") == ("noext", "")


def test_filename_mode_matches_any_extension_and_folder():
    t = rt.match([rt.Sent("P1/shots/A_001.jpg", 10.0)],
                 [rt.Returned("somewhere/else/a_001.TIF", 20.0)], "filename")
    (item,) = t.items
    assert item.batch == "P1" and not item.outstanding and item.returned_at == 20.0
    assert t.unmatched == ()


def test_filename_folder_mode_needs_the_same_folder():
    sent = [rt.Sent("P1/shots/a.jpg", 10.0)]
    t = rt.match(sent, [rt.Returned("P1/other/a.tif", 20.0)], "filename+folder")
    assert t.items[0].outstanding and t.unmatched == ("P1/other/a.tif",)
    t = rt.match(sent, [rt.Returned("p1/Shots/a.tif", 20.0)], "filename+folder")
    assert not t.items[0].outstanding


def test_duplicate_suffix_rule():
    sent = [rt.Sent("P1/a.jpg", 10.0)]
    t = rt.match(sent, [rt.Returned("P1/a (2).tif", 20.0)], "filename")
    assert not t.items[0].outstanding
    # (1) is not a keep-both suffix, and a sent item with the suffixed stem wins
    t = rt.match(sent, [rt.Returned("P1/a (1).tif", 20.0)], "filename")
    assert t.items[0].outstanding and t.unmatched == ("P1/a (1).tif",)
    t = rt.match(sent + [rt.Sent("P1/a (2).jpg", 11.0)], [rt.Returned("P1/a (2).tif", 20.0)],
                 "filename")
    by = {i.relpath: i for i in t.items}
    assert by["P1/a (2).jpg"].returned_at == 20.0 and by["P1/a.jpg"].returned_at is None


def test_rejection_makes_an_item_outstanding_again():
    sent = [rt.Sent("P1/a.jpg", 10.0), rt.Sent("P1/a.tif", 30.0, rejection=True)]
    t = rt.match(sent, [rt.Returned("P1/a.tif", 20.0)], "filename")
    (item,) = t.items
    assert item.outstanding and item.rejected_at == 30.0 and item.relpath == "P1/a.jpg"
    t = rt.match(sent, [rt.Returned("P1/a.tif", 40.0)], "filename")
    assert not t.items[0].outstanding
    f = rt.figures(t.items, 50.0)
    assert f == {"sent": 1, "returned": 1, "outstanding": 0, "rejected": 1,
                 "oldest_outstanding_age": None}


def test_report_per_batch_and_overdue():
    sent = [rt.Sent("P1/a.jpg", 100.0), rt.Sent("P1/b.jpg", 200.0), rt.Sent("P2/c.jpg", 300.0),
            rt.Sent("loose.jpg", 50.0)]
    t = rt.match(sent, [rt.Returned("P1/a.tif", 400.0), rt.Returned("x.tif", 400.0)], "filename")
    r = rt.report(t, 1000.0)
    assert (r["sent"], r["returned"], r["outstanding"], r["unmatched_returns"]) == (4, 1, 3, 1)
    assert r["oldest_outstanding_age"] == 950.0
    by = {b["batch"]: b for b in r["batches"]}
    assert by["P1"]["outstanding"] == 1 and by["P1"]["oldest_outstanding_age"] == 800.0
    assert by[""]["sent"] == 1
    late = rt.overdue(t.items, 1000.0, 750.0)
    assert [i.relpath for i in late] == ["loose.jpg", "P1/b.jpg"]
    assert rt.overdue(t.items, 1000.0, None) == []


names = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/"),
                min_size=1, max_size=12).filter(lambda s: s not in (".", ".."))


stems = names.filter(lambda s: "." not in s)   # a dot would make part of it the extension


@given(st.lists(st.tuples(names, stems, st.sampled_from([".jpg", ".tif", ".png", ""])),
                min_size=1, max_size=8, unique_by=lambda t: (t[0], t[1])))
def test_every_sent_file_returned_under_any_extension_is_matched(files):
    sent = [rt.Sent(f"{b}/{n}{e}", float(i)) for i, (b, n, e) in enumerate(files)]
    back = [rt.Returned(f"{b}/{n}.tif", 100.0) for b, n, _ in files]
    for mode in ("filename", "filename+folder"):
        t = rt.match(sent, back, mode)
        assert all(not i.outstanding for i in t.items), mode
        assert rt.figures(t.items, 200.0)["outstanding"] == 0


@given(st.lists(st.tuples(names, st.floats(0, 1e6), st.booleans()), max_size=10),
       st.lists(st.tuples(names, st.floats(0, 1e6)), max_size=10), st.floats(0, 2e6))
def test_figures_add_up(sent, back, now):
    t = rt.match([rt.Sent(f"B/{n}.jpg", at, rej) for n, at, rej in sent],
                 [rt.Returned(f"B/{n}.tif", at) for n, at in back], "filename")
    f = rt.figures(t.items, now)
    assert f["returned"] + f["outstanding"] == len(t.items)
    assert f["sent"] <= len(t.items) and f["rejected"] <= len(t.items)
    assert (f["oldest_outstanding_age"] is None) == (f["outstanding"] == 0)


def test_accept_patterns_are_case_insensitive():
    assert rt.accepted("A.TIF", ("*.tif",))
    assert rt.accepted("a.tif", ("*.jpg", "*.tif"))
    assert not rt.accepted("a.tif.txt", ("*.tif",))
    assert not rt.accepted("notes.txt", ("*.tif", "*.jpg"))
    assert rt.accepted("anything", ("*",))


def sha(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def test_batches_complete_only_when_every_file_is_done():
    sent = [cl.SentFile("P1/a.jpg", 3, sha(b"abc"), 10.0)]
    q = [cl.QueueRow("P1/a.jpg", "done", 10.0), cl.QueueRow("P1/b.jpg", "settling", 12.0),
         cl.QueueRow("loose.jpg", "done", 5.0), cl.QueueRow("P2/c.jpg", "held", 1.0)]
    b = cl.batches(q, sent)
    assert set(b) == {"P1", "P2"}          # loose files belong to no batch
    assert not b["P1"].complete and b["P1"].waiting == 1 and b["P1"].quiet_since == 12.0
    assert not b["P2"].complete            # nothing of it on Box
    b = cl.batches([cl.QueueRow("P1/a.jpg", "done", 10.0)], sent)
    assert b["P1"].complete and not b["P1"].due(100.0, 300.0) and b["P1"].due(310.0, 300.0)
    for status in ("failed", "skipped", "pending", "uploading", "held"):
        assert not cl.batches([cl.QueueRow("P1/x.jpg", status, 1.0)], sent)["P1"].complete


def test_log_lists_only_what_is_on_box_with_the_same_sha1():
    sent = [cl.SentFile("P1/a.jpg", 3, sha(b"abc"), 1.0), cl.SentFile("P1/s/b.jpg", 1, sha(b"b"), 1.0),
            cl.SentFile("P1/gone.jpg", 1, sha(b"g"), 1.0), cl.SentFile("P2/c.jpg", 1, sha(b"c"), 1.0),
            cl.SentFile("P1/P1_transfer_completed.log", 5, sha(b"x"), 1.0)]
    on_box = {"a.jpg": sha(b"abc"), "s/b.jpg": sha(b"changed"), "vendor.txt": sha(b"v"),
              "P1_transfer_completed.log": sha(b"x")}
    listed = cl.entries("P1", sent, on_box, "P1_transfer_completed.log")
    assert [s.relpath for s in listed] == ["P1/a.jpg"]
    data = cl.content("P1", listed)
    assert cl.parse(data) == [("a.jpg", 3, sha(b"abc"))]
    assert data == cl.content("P1", listed)   # deterministic: unchanged batch, same bytes
    assert cl.log_name("{batch}_{mapping}.log", "P1", "acme") == "P1_acme.log"


def test_decide():
    done = cl.BatchState("P1", True, 10.0, 0)
    listed = [cl.SentFile("P1/a.jpg", 3, sha(b"abc"), 1.0)]
    data = cl.content("P1", listed)
    assert cl.decide(done, listed, None, data, 11.0, 300.0).action == "wait"
    assert cl.decide(done, listed, None, data, 400.0, 300.0).action == "write"
    assert cl.decide(done, listed, cl.fingerprint(data), data, 400.0, 300.0).action == "same"
    grown = cl.content("P1", listed + [cl.SentFile("P1/b.jpg", 1, sha(b"b"), 2.0)])
    assert cl.decide(done, listed, cl.fingerprint(data), grown, 400.0, 300.0).action == "write"
    assert cl.decide(done, [], None, cl.content("P1", []), 400.0, 300.0).action == "wait"
    assert cl.decide(cl.BatchState("P1", False, 10.0, 2), listed, None, data, 400.0, 0).action == "wait"
    assert cl.decide(None, None, None, None, 400.0, 0).action == "wait"


def test_log_uses_the_name_box_holds_and_compares_like_box():
    nfd = "Cafe\u0301.jpg"
    sent = [cl.SentFile("P1/a.jpg", 1, sha(b"1"), 1.0, box_name="a (1).jpg"),
            cl.SentFile(f"P1/Shots/{nfd}", 2, sha(b"2"), 1.0)]
    on_box = {"a.jpg": sha(b"someone else's"), "a (1).jpg": sha(b"1"),
              "shots/caf\u00e9.JPG": sha(b"2")}
    listed = cl.entries("P1", sent, on_box, "P1.log")
    assert [s.box_path for s in listed] == ["P1/Shots/" + nfd, "P1/a (1).jpg"]
    assert [r[0] for r in cl.parse(cl.content("P1", listed))] == ["Shots/" + nfd, "a (1).jpg"]


@given(st.lists(st.tuples(st.sampled_from(["P1", "P2"]), st.sampled_from(["a", "b", "s/c", "S/C"]),
                          st.binary(max_size=3)), max_size=8),
       st.dictionaries(st.sampled_from(["a", "b", "s/c", "x"]), st.binary(max_size=3), max_size=4))
def test_a_log_never_lists_what_is_not_on_box_with_that_sha1(sent_spec, box_spec):
    sent = [cl.SentFile(f"{b}/{n}", len(d), sha(d), 1.0) for b, n, d in sent_spec]
    on_box = {k: sha(v) for k, v in box_spec.items()}
    listed = cl.entries("P1", sent, on_box, "P1.log")
    box_keys = {cl.path_key(k): v for k, v in on_box.items()}
    for s in listed:
        assert s.relpath.startswith("P1/")
        assert box_keys[cl.path_key(s.relpath[3:])] == s.sha1
    for path, size, digest in cl.parse(cl.content("P1", listed)):
        assert box_keys[cl.path_key(path)] == digest

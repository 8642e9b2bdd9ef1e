"""Pure rules of the incoming side: names, once-per-version, never-overwrite."""

from __future__ import annotations

import hashlib
import os
import random
import unicodedata
from pathlib import Path

from hypothesis import given, settings, strategies as st

from cfbox_watch.incoming.planner import (
    LocalEntry, Record, RemoteFile, backoff_delay, free_name, is_temp_name, local_parts,
    needs_work, plan_placement, temp_name, variant_name,
)
from cfbox_watch.names import safe_join


def entries(*names, size=10, mtime=1):
    return {unicodedata.normalize("NFC", n): LocalEntry(n, True, size, mtime) for n in names}


# -- names -------------------------------------------------------------------------

def test_hostile_names_rejected_with_reason():
    for path in (["..", "x.jpg"], ["a", ".."], ["."], ["a/b.jpg"], ["bad\x01.jpg"],
                 ["x" * 256 + ".jpg"], ["é" * 128], [""], ["evil\n.jpg"],
                 [".x.1.cfbox-tmp"]):
        parts, problem = local_parts(path)
        assert parts is None, path
        assert problem and len(problem) < 300


def test_nfd_becomes_nfc():
    nfd = unicodedata.normalize("NFD", "Café.jpg")
    assert nfd != "Café.jpg"
    parts, problem = local_parts(["Séance", nfd])
    assert problem is None
    assert parts == (unicodedata.normalize("NFC", "Séance"), unicodedata.normalize("NFC", "Café.jpg"))


box_name = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=40,
) | st.sampled_from(["..", ".", "", "a/../../b", "/etc/passwd", "..\\x", "con", " x "])


@settings(max_examples=300, deadline=None)
@given(st.lists(box_name, min_size=1, max_size=5))
def test_a_box_name_never_maps_outside_incoming(tmp_path_factory, path):
    root = Path("/srv/incoming/acme")
    parts, problem = local_parts(path)
    if parts is None:
        assert problem
        return
    joined = os.path.normpath(os.path.join(root, *parts))
    assert joined.startswith(str(root) + os.sep)
    assert all(p not in (".", "..") and "/" not in p and "\x00" not in p for p in parts)
    assert all(len(p.encode()) <= 255 for p in parts)
    # agrees with the shared safe_join
    safe_join(root, parts)


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=30))
def test_nfc_and_nfd_map_to_one_local_name(name):
    a, _ = local_parts([unicodedata.normalize("NFC", name)])
    b, _ = local_parts([unicodedata.normalize("NFD", name)])
    assert a == b


# -- once per Box version -------------------------------------------------------------

def test_needs_work_once_per_version():
    r = RemoteFile("1", ("a.jpg",), sha1="aa", version_id="v1")
    assert needs_work(r, None)
    done = Record("1", "done", "a.jpg", "a.jpg", "aa", 10, 1, seen_sha1="aa", seen_version="v1")
    assert not needs_work(r, done)
    # renamed / moved on Box, same content: nothing to fetch
    assert not needs_work(RemoteFile("1", ("sub", "b.jpg"), sha1="aa", version_id="v1"), done)
    # same bytes uploaded again as a new version: nothing to fetch
    assert not needs_work(RemoteFile("1", ("a.jpg",), sha1="AA", version_id="v2"), done)
    assert needs_work(RemoteFile("1", ("a.jpg",), sha1="bb", version_id="v2"), done)
    skipped = Record("1", "skipped", "a.jpg", seen_sha1="bb")
    assert not needs_work(RemoteFile("1", ("a.jpg",), sha1="bb"), skipped)
    rejected = Record("1", "rejected", "..", seen_sha1="aa")
    assert not needs_work(RemoteFile("1", ("..",), sha1="aa"), rejected)
    assert needs_work(RemoteFile("1", ("ok.jpg",), sha1="aa"), rejected)
    assert needs_work(r, Record("1", "failed", "a.jpg"))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from(["s1", "s2", "s3"])),
                min_size=1, max_size=30))
def test_a_version_is_fetched_at_most_once(observations):
    """Any sequence of listings (file id, sha1) downloads each (id, sha1) change once:
    simulate the scan + worker with the planner's needs_work."""
    recs: dict[str, Record] = {}
    fetched: list[tuple[str, str]] = []
    for fid, sha in observations:
        remote = RemoteFile(fid, (f"{fid}.jpg",), sha1=sha)
        if needs_work(remote, recs.get(fid)):
            fetched.append((fid, sha))
            recs[fid] = Record(fid, "done", f"{fid}.jpg", f"{fid}.jpg", sha, 1, 1, seen_sha1=sha)
    # every fetch is a change from the previous fetch of that id
    last: dict[str, str] = {}
    for fid, sha in fetched:
        assert last.get(fid) != sha
        last[fid] = sha
    # and every change that was observed was fetched
    seen_last: dict[str, str] = {}
    for fid, sha in observations:
        seen_last[fid] = sha
    assert last == seen_last


# -- placement ------------------------------------------------------------------------

def test_new_file_goes_to_its_name():
    p = plan_placement("aa", ("sub", "a.jpg"), None, {}, "keep_both")
    assert (p.action, p.relpath, p.replace) == ("download", "sub/a.jpg", False)


def test_foreign_local_file_is_never_overwritten():
    p = plan_placement("aa", ("a.jpg",), None, entries("a.jpg", "a (2).jpg"), "overwrite")
    assert (p.action, p.relpath, p.replace) == ("download", "a (3).jpg", False)


def test_identical_foreign_file_is_adopted():
    p = plan_placement("aa", ("a.jpg",), None, entries("a.jpg"), "keep_both", target_sha1="AA")
    assert (p.action, p.relpath) == ("adopt", "a.jpg")


def test_nfd_local_file_counts_as_the_same_name():
    nfd = unicodedata.normalize("NFD", "Café.jpg")
    nfc = unicodedata.normalize("NFC", "Café.jpg")
    p = plan_placement("aa", (nfc,), None, entries(nfd), "keep_both", target_sha1="aa")
    assert (p.action, p.relpath) == ("adopt", nfd)
    p = plan_placement("bb", (nfc,), None, entries(nfd), "keep_both")
    assert p.relpath == "Café (2).jpg" and not p.replace


def test_new_version_replaces_unchanged_copy():
    rec = Record("1", "pending", "a.jpg", "a.jpg", "aa", 10, 1, seen_sha1="aa")
    p = plan_placement("bb", ("a.jpg",), rec, entries("a.jpg", size=10, mtime=1), "keep_both")
    assert (p.action, p.relpath, p.replace) == ("download", "a.jpg", True)


def test_locally_changed_copy_policies():
    rec = Record("1", "pending", "a.jpg", "a.jpg", "aa", 10, 1, seen_sha1="aa")
    changed = entries("a.jpg", size=11, mtime=2)
    p = plan_placement("bb", ("a.jpg",), rec, changed, "keep_both")
    assert (p.action, p.relpath, p.replace) == ("download", "a (2).jpg", False)
    assert plan_placement("bb", ("a.jpg",), rec, changed, "skip").action == "skip"
    p = plan_placement("bb", ("a.jpg",), rec, changed, "overwrite")
    assert (p.relpath, p.replace) == ("a.jpg", True)


def test_kept_both_copy_is_updated_in_place_when_untouched():
    rec = Record("1", "pending", "a.jpg", "a (2).jpg", "bb", 10, 1, seen_sha1="bb")
    ents = {**entries("a.jpg", size=99, mtime=9), **entries("a (2).jpg", size=10, mtime=1)}
    p = plan_placement("cc", ("a.jpg",), rec, ents, "keep_both")
    assert (p.relpath, p.replace) == ("a (2).jpg", True)
    # but not when the studio edited it too
    ents = {**entries("a.jpg", size=99, mtime=9), **entries("a (2).jpg", size=10, mtime=5)}
    p = plan_placement("cc", ("a.jpg",), rec, ents, "keep_both")
    assert (p.relpath, p.replace) == ("a (3).jpg", False)


def test_folder_in_the_way_keeps_both():
    p = plan_placement("aa", ("a",), None, {"a": LocalEntry("a", False)}, "overwrite")
    assert p.relpath == "a (2)" and not p.replace


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(["a.jpg", "a (2).jpg", "b", ".h", unicodedata.normalize("NFD", "é.tif")]),
    local=st.lists(st.sampled_from(["a.jpg", "a (2).jpg", "a (3).jpg", "b", "b (2)", ".h",
                                    "é.tif", unicodedata.normalize("NFD", "é.tif")]), max_size=6),
    rec_path=st.sampled_from([None, "a.jpg", "a (2).jpg", "b", "é.tif"]),
    unchanged=st.booleans(),
    policy=st.sampled_from(["keep_both", "skip", "overwrite"]),
)
def test_placement_never_clobbers_what_is_not_ours(name, local, rec_path, unchanged, policy):
    parts, _ = local_parts([name])
    ents = {unicodedata.normalize("NFC", n): LocalEntry(n, True, 10, 1) for n in local}
    rec = None
    if rec_path is not None:
        rec = Record("1", "pending", name, rec_path, "aa", 10, 1 if unchanged else 7, seen_sha1="aa")
    p = plan_placement("bb", parts, rec, ents, policy)
    if p.action != "download":
        return
    if p.replace:
        # replacing is allowed only for our own copy: untouched, or policy overwrite
        assert rec is not None and p.relpath == rec.relpath
        assert unchanged or policy == "overwrite"
    else:
        assert unicodedata.normalize("NFC", p.relpath) not in ents
    assert len(p.relpath.encode()) <= 255


def test_long_names_stay_within_255_bytes():
    long = "é" * 125 + ".jpg"  # 254 bytes
    assert len(variant_name(long, 2).encode()) <= 255
    assert len(temp_name(long, "123456789012").encode()) <= 255
    assert is_temp_name(temp_name(long, "1"))
    assert free_name("a.jpg", {"a (2).jpg"}) == "a (3).jpg"


def test_backoff_grows_with_jitter_and_honours_retry_after():
    rng = random.Random(1)
    d1 = [backoff_delay(1, rng=rng) for _ in range(50)]
    d5 = [backoff_delay(5, rng=rng) for _ in range(50)]
    assert min(d1) >= 2.5 and max(d1) <= 7.5 and len(set(d1)) > 1
    assert min(d5) > max(d1)
    assert backoff_delay(1, 120, rng=rng) >= 120
    assert backoff_delay(50, rng=rng) <= 900 * 1.5


# -- a model of one folder over time ----------------------------------------------------

step = st.one_of(
    st.tuples(st.just("version"), st.sampled_from(["1", "2", "3"])),
    st.tuples(st.just("edit"), st.sampled_from(["a.jpg", "a (2).jpg", "b.jpg", "Café.jpg"])),
    st.tuples(st.just("delete"), st.sampled_from(["a.jpg", "a (2).jpg", "b.jpg", "Café.jpg"])),
)


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(step, max_size=12),
    foreign=st.lists(st.sampled_from(["a.jpg", "b.jpg", "Café.jpg", "a (2).jpg"]), max_size=3, unique=True),
    policy=st.sampled_from(["keep_both", "skip", "overwrite"]),
)
def test_model_studio_work_is_never_lost_and_each_box_file_has_one_path(steps, foreign, policy):
    """Box files 1 and 2 share the name a.jpg over time (2 arrives after 1 is gone from
    the name, as a re-upload would), 3 is an NFD 'Café.jpg'.  The studio edits and deletes
    files between syncs.  Invariants: studio content survives (except our own copy under
    `overwrite`), and no version is fetched twice."""
    nfd = unicodedata.normalize("NFD", "Café.jpg")
    names = {"1": "a.jpg", "2": "a.jpg", "3": nfd}
    fs: dict[str, tuple[bytes, int]] = {}   # actual name -> (content, mtime)
    clock = [0]

    def write(name, content):
        clock[0] += 1
        fs[name] = (content, clock[0])

    for n in foreign:
        write(n, f"studio {n}".encode())
    studio = {c for c, _ in fs.values()}     # contents the studio made
    recs: dict[str, Record] = {}
    versions = {"1": 0, "2": 0, "3": 0}
    fetched: list[tuple[str, int]] = []
    gone: set[str] = set()

    def sync():
        for fid in ("1", "2", "3"):
            if versions[fid] == 0 or fid in gone:
                continue
            content = f"box {fid} v{versions[fid]}".encode()
            h = hashlib.sha1(content).hexdigest()
            remote = RemoteFile(fid, (names[fid],), sha1=h, size=len(content))
            rec = recs.get(fid)
            if not needs_work(remote, rec):
                continue
            parts, problem = local_parts(remote.box_path)
            assert problem is None
            ents = {unicodedata.normalize("NFC", n): LocalEntry(n, True, len(c), m) for n, (c, m) in fs.items()}
            entry = ents.get(parts[-1])
            tsha = hashlib.sha1(fs[entry.name][0]).hexdigest() if entry and entry.size == len(content) else None
            p = plan_placement(h, parts, rec if rec and rec.relpath else None, ents, policy, target_sha1=tsha)
            if p.action == "skip":
                recs[fid] = Record(fid, "skipped", names[fid], rec.relpath, rec.sha1, rec.local_size,
                                   rec.local_mtime_ns, seen_sha1=h)
                continue
            if p.action == "download":
                if not p.replace:
                    assert unicodedata.normalize("NFC", p.relpath) not in ents
                else:
                    old = fs.get(p.relpath, (b"", 0))[0]
                    assert old not in studio or policy == "overwrite"
                fetched.append((fid, versions[fid]))
                write(p.relpath, content)
            c, m = fs[p.relpath]
            recs[fid] = Record(fid, "done", names[fid], p.relpath, h, len(c), m, seen_sha1=h)

    for kind, arg in steps:
        if kind == "version":
            # Box names are unique per folder: 2 ("a.jpg") arrives only after 1 is gone.
            if arg == "2":
                gone.add("1")
            if arg in gone:
                continue
            versions[arg] += 1
        elif kind == "edit" and arg in fs:
            content = f"studio edit {clock[0]}".encode()
            studio.discard(fs[arg][0])  # the studio replaced its own earlier content
            studio.add(content)
            write(arg, content)
        elif kind == "delete" and arg in fs:
            studio.discard(fs[arg][0])
            del fs[arg]
        sync()
    assert len(fetched) == len(set(fetched))  # no version twice
    # every studio content still exists somewhere, unless policy overwrite replaced an
    # edit of our own copy
    if policy != "overwrite":
        have = {c for c, _ in fs.values()}
        assert studio <= have

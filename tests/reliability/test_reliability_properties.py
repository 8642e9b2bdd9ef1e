"""Scenario 14, property-based: the decision core under random local changes, Box states,
crashes and retries, and the name rules under random names.

The outgoing model drives the real pure functions (`outgoing.planner.plan_upload`,
`on_name_conflict`) through the same protocol the engine follows (a version upload
carries the remembered etag as If-Match; a 412 re-reads the Box file and compares its
SHA-1; a 409 on a new upload compares the conflicting file's SHA-1), with a crash possible
between Box accepting a change and the state DB recording it.  Invariants: Box never holds
a version identical to the one before it, never two files for one name, and after a final
pass every local file's bytes are on Box (the current version, unless the vendor
uploaded a newer one: an unchanged local file is not sent again over the vendor's)."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cfbox_watch import names
from cfbox_watch.incoming import planner as inplan
from cfbox_watch.outgoing import planner as outplan

NAMES = ["a.jpg", "b.tif", "c/d.png"]
ops = st.lists(st.one_of(
    st.tuples(st.just("write"), st.sampled_from(NAMES), st.integers(0, 3)),          # content id
    st.tuples(st.just("upload"), st.sampled_from(NAMES), st.sampled_from([None, "before_box", "after_box"])),
    st.tuples(st.just("vendor_version"), st.sampled_from(NAMES), st.integers(0, 3)),  # someone else on Box
    st.tuples(st.just("lose_state"), st.just(""), st.just(0)),
), max_size=40)


class Crash(Exception):
    pass


class Model:
    def __init__(self):
        self.local: dict[str, str] = {}
        self.db: dict[str, dict] = {}                 # relpath -> {box_file_id, sha1, etag}
        self.box: dict[str, dict] = {}                # name -> {id, versions: [sha1]}
        self.next_id = 1

    def etag(self, name):
        return str(len(self.box[name]["versions"]))

    def upload(self, name, crash):
        if name not in self.local:
            return
        sha = self.local[name]
        rec = self.db.get(name, {})
        row = outplan.Row(relpath=name, status="uploading", size=1, mtime_ns=1, inode=1,
                          sha1=rec.get("sha1"), box_file_id=rec.get("box_file_id"))
        kind = outplan.plan_upload(row, sha, "version")
        if crash == "before_box":
            raise Crash
        if kind == "already":
            return
        if kind == "version" and name in self.box and rec.get("box_file_id") == self.box[name]["id"]:
            if rec.get("etag") != self.etag(name):     # 412: read the Box file again
                if self.box[name]["versions"][-1] == sha:
                    return self._record(name, sha, crash)
            self.box[name]["versions"].append(sha)
            return self._record(name, sha, crash)
        # a new file (or the Box file we knew vanished)
        if name in self.box:                           # 409: compare the conflicting file
            decision = outplan.on_name_conflict(sha, self.box[name]["versions"][-1], "version")
            if decision == "already":
                return self._record(name, sha, crash)
            assert decision == "version"
            self.box[name]["versions"].append(sha)
            return self._record(name, sha, crash)
        self.box[name] = {"id": str(self.next_id), "versions": [sha]}
        self.next_id += 1
        self._record(name, sha, crash)

    def _record(self, name, sha, crash):
        if crash == "after_box":                       # Box has it, the state DB does not
            raise Crash
        self.db[name] = {"box_file_id": self.box[name]["id"], "sha1": sha, "etag": self.etag(name)}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def test_outgoing_decisions_never_duplicate_or_lose_under_crashes(sequence):
    m = Model()
    for op, name, arg in sequence:
        if op == "write":
            m.local[name] = f"content-{arg}"
        elif op == "upload":
            try:
                m.upload(name, arg)
            except Crash:
                pass
        elif op == "vendor_version" and name in m.box:
            m.box[name]["versions"].append(f"vendor-{arg}-{len(m.box[name]['versions'])}")
        elif op == "lose_state":
            m.db.clear()
    for name in list(m.local):                         # the final pass, no crash
        m.upload(name, None)
    for name, node in m.box.items():
        v = node["versions"]
        assert all(a != b for a, b in zip(v, v[1:])), f"{name}: a version identical to the previous one: {v}"
    vendored = {name for op, name, _ in sequence if op == "vendor_version"}
    for name, sha in m.local.items():
        v = m.box[name]["versions"]
        assert sha in v, f"{name}: local content never reached Box (Box has {v}, local {sha})"
        if name not in vendored:  # nobody else touched it: Box shows exactly the local bytes
            assert v[-1] == sha, f"{name}: lost (Box has {v}, local {sha})"
    assert set(m.box) <= set(NAMES)


hostile_part = st.one_of(
    st.sampled_from(["..", ".", "", "/", "a/../..", "\\..\\x", "~", "con", " x ", "\x00", "a\x00b"]),
    st.text(min_size=0, max_size=300),
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(hostile_part, min_size=1, max_size=4))
def test_safe_join_never_leaves_the_root(tmp_path_factory, parts):
    root = Path("/srv/studio/incoming/acme")
    try:
        p = names.safe_join(root, parts)
    except names.UnsafeNameError:
        return
    except ValueError:                                 # NUL bytes: refused by the OS layer too
        return
    assert p == root or root in p.parents, (parts, p)
    assert ".." not in p.relative_to(root).parts


@settings(max_examples=500, deadline=None)
@given(st.lists(hostile_part, min_size=1, max_size=4))
def test_incoming_local_parts_are_always_safe_relative_names(box_path):
    parts, problem = inplan.local_parts(tuple(box_path))
    if parts is None:
        assert problem                                   # refused, with a reason to report
        return
    for part in parts:
        assert part not in ("", ".", "..") and "/" not in part and "\x00" not in part, (box_path, parts)
        assert len(part.encode("utf-8", "surrogateescape")) <= 255, (box_path, parts)
    placement = inplan.plan_placement("s", parts, None, {}, "keep_both")
    rel = Path(placement.relpath)
    assert not rel.is_absolute() and ".." not in rel.parts

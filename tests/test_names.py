import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cfbox_watch.errors import ItemError
from cfbox_watch.names import (
    UnsafeNameError,
    box_name_problem,
    casefold_key,
    local_name_problem,
    nfc,
    safe_join,
)


# --- box_name_problem -------------------------------------------------------

@pytest.mark.parametrize(
    "name",
    [
        "IMG_0001.jpg",
        "a",
        "x" * 255,
        "Café – final (2).tif",
        "写真　001.jpg",          # ideographic space inside
        "no\u00a0break.jpg",       # no-break space inside
        "👩‍🎨.png",               # ZWJ sequence (Cf) is printable enough
        "...",                     # only '.' and '..' are reserved
        ".hidden",
        "a-b_c.d e",
        "CON",                     # Windows-reserved, fine on Box
    ],
)
def test_box_accepts_ordinary_names(name):
    assert box_name_problem(name) is None


@pytest.mark.parametrize(
    "name, words",
    [
        ("", "empty"),
        (".", "'.'"),
        ("..", "'..'"),
        ("a/b.jpg", "'/'"),
        ("a\\b.jpg", "'\\'"),
        (" lead.jpg", "space"),
        ("trail.jpg ", "space"),
        ("tab\t.jpg", "U+0009"),
        ("nl\n.jpg", "U+000A"),
        ("nul\x00.jpg", "U+0000"),
        ("del\x7f.jpg", "U+007F"),
        ("c1\x85.jpg", "U+0085"),
        ("ls\u2028.jpg", "U+2028"),
        ("x" * 256, "256 characters"),
    ],
)
def test_box_rejects_with_a_reason(name, words):
    problem = box_name_problem(name)
    assert problem is not None
    assert words in problem


def test_box_length_counts_characters_not_bytes():
    assert box_name_problem("é" * 255) is None       # 510 bytes, 255 chars
    assert box_name_problem("é" * 256) is not None


def test_box_name_not_a_string():
    assert box_name_problem(b"abc") is not None  # type: ignore[arg-type]


@given(st.text(min_size=1, max_size=300))
def test_box_problem_is_none_only_for_valid_names(name):
    problem = box_name_problem(name)
    valid = (
        name not in (".", "..")
        and "/" not in name
        and "\\" not in name
        and name == name.strip(" ")
        and len(name) <= 255
        and all(ord(c) >= 0x20 and not (0x7F <= ord(c) <= 0x9F) for c in name)
        and "\u2028" not in name
        and "\u2029" not in name
        and not any(0xD800 <= ord(c) <= 0xDFFF for c in name)
    )
    assert (problem is None) == valid


# --- local_name_problem -----------------------------------------------------

@pytest.mark.parametrize("name", ["a.jpg", "Café.jpg", b"Caf\xc3\xa9.jpg", "x" * 255, "a\\b", " sp "])
def test_local_accepts(name):
    assert local_name_problem(name) is None


@pytest.mark.parametrize(
    "name, words",
    [
        ("", "empty"),
        (".", "folder itself"),
        ("..", "folder itself"),
        (b"..", "folder itself"),
        ("a/b", "'/'"),
        ("../x", "'/'"),
        ("a\x00b", "NUL"),
        (b"a\x00b", "NUL"),
        ("a\x1bb", "U+001B"),
        ("a\nb", "U+000A"),
        (b"\xff\xfe.jpg", "UTF-8"),
        ("bad\udcff.jpg", "UTF-8"),         # os.fsdecode of an undecodable byte
        ("é" * 128, "256 bytes"),         # 128 chars but 256 bytes
        (b"x" * 256, "256 bytes"),
    ],
)
def test_local_rejects(name, words):
    problem = local_name_problem(name)
    assert problem is not None
    assert words in problem


def test_local_rejects_non_text():
    assert local_name_problem(123) is not None  # type: ignore[arg-type]


# --- nfc / casefold_key -----------------------------------------------------

def test_nfc_merges_decomposed_spelling():
    decomposed = "Cafe\u0301.jpg"
    assert decomposed != "Café.jpg"
    assert nfc(decomposed) == "Café.jpg"


def test_casefold_key_matches_box_case_insensitivity():
    assert casefold_key("IMG_001.JPG") == casefold_key("img_001.jpg")
    assert casefold_key("Cafe\u0301.JPG") == casefold_key("café.jpg")
    assert casefold_key("a.jpg") != casefold_key("b.jpg")


@given(st.text(max_size=50))
def test_casefold_key_is_idempotent_on_case(name):
    assert casefold_key(name.upper()) == casefold_key(casefold_key(name.upper()))


# --- safe_join --------------------------------------------------------------

def test_safe_join_plain(tmp_path):
    assert safe_join(tmp_path, ["a", "b.jpg"]) == tmp_path / "a" / "b.jpg"
    assert safe_join(tmp_path, "a/b.jpg") == tmp_path / "a" / "b.jpg"
    assert safe_join(tmp_path, "a//b.jpg") == tmp_path / "a" / "b.jpg"
    assert safe_join(tmp_path, Path("a/b.jpg")) == tmp_path / "a" / "b.jpg"


@pytest.mark.parametrize(
    "rel",
    [
        "../x",
        "a/../../x",
        "/etc/passwd",
        ["..", "x"],
        ["a", "..", "..", "x"],
        ["a/../../x"],
        ["."],
        [],
        "",
        ["ok", "bad\x00"],
        ["a\nb"],
        [b"bytes"],
    ],
)
def test_safe_join_refuses(tmp_path, rel):
    with pytest.raises(UnsafeNameError):
        safe_join(tmp_path, rel)


def test_unsafe_name_error_is_an_item_error(tmp_path):
    with pytest.raises(ItemError) as info:
        safe_join(tmp_path, ["..", "etc"])
    assert "'..'" in str(info.value)


def test_safe_join_refuses_symlink_escape(tmp_path):
    root = tmp_path / "incoming"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    os.symlink(outside, root / "link")
    with pytest.raises(UnsafeNameError, match="symbolic link"):
        safe_join(root, ["link", "x.jpg"])
    # a symlink that stays inside is fine
    (root / "real").mkdir()
    os.symlink(root / "real", root / "inner")
    assert safe_join(root, ["inner", "x.jpg"]) == root / "inner" / "x.jpg"


def test_safe_join_works_with_symlinked_root(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    os.symlink(real, tmp_path / "alias")
    assert safe_join(tmp_path / "alias", ["a.jpg"]) == tmp_path / "alias" / "a.jpg"


_part = st.one_of(
    st.sampled_from(["..", ".", "", "/", "a", "b/..", "../..", "x\x00", "/abs", "\\..", "~"]),
    st.text(max_size=12),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_part, max_size=6))
def test_safe_join_never_escapes(tmp_path_factory, parts):
    root = tmp_path_factory.getbasetemp() / "hyp-root"
    root.mkdir(exist_ok=True)
    try:
        result = safe_join(root, parts)
    except UnsafeNameError:
        return
    real_root = root.resolve()
    real = result.resolve()
    assert real != real_root
    assert real_root in real.parents
    normalised = Path(os.path.normpath(result))
    assert root in normalised.parents


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_safe_join_string_form_never_escapes(tmp_path_factory, rel):
    root = tmp_path_factory.getbasetemp() / "hyp-root2"
    root.mkdir(exist_ok=True)
    try:
        result = safe_join(root, rel)
    except UnsafeNameError:
        return
    assert root.resolve() in result.resolve().parents

"""The emulator's pure pieces: the streaming multipart reader (the part most likely to
break on a boundary split across reads), byte ranges, name rules and rate-limit windows."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cfbox_watch.emulator.downloads import parse_range
from cfbox_watch.emulator.faults import RateLimits
from cfbox_watch.emulator.http import ApiError, BodyReader, Throttle
from cfbox_watch.emulator.multipart import Multipart
from cfbox_watch.emulator.names import name_problem


class Trickle(io.BytesIO):
    """A socket-like file that returns at most a few bytes per read, in a given pattern."""

    def __init__(self, data: bytes, sizes: list[int]):
        super().__init__(data)
        self.sizes = sizes or [1]
        self.i = 0

    def read(self, n=-1):
        k = self.sizes[self.i % len(self.sizes)]
        self.i += 1
        return super().read(min(n, k) if n and n > 0 else k)


def body_of(parts: list[tuple[str, bytes]], boundary: bytes) -> bytes:
    out = b""
    for name, data in parts:
        out += b"--" + boundary + b"\r\nContent-Disposition: form-data; name=\"" + name.encode() + b"\"\r\n\r\n"
        out += data + b"\r\n"
    return out + b"--" + boundary + b"--\r\n"


tricky = st.binary(max_size=300) | st.lists(st.sampled_from([b"\r\n", b"--", b"B0UND", b"\r\n--B0UN", b"x"]),
                                             max_size=40).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(contents=st.lists(tricky, min_size=1, max_size=4), sizes=st.lists(st.integers(1, 40), min_size=1, max_size=8))
def test_multipart_reassembles_parts_across_any_read_split(contents, sizes):
    boundary = b"B0UNDARY"
    parts = [(f"p{i}", c) for i, c in enumerate(contents)]
    raw = body_of(parts, boundary)
    reader = BodyReader(Trickle(raw, sizes), {"Content-Length": str(len(raw))}, Throttle(lambda: None))
    mp = Multipart(reader, boundary)
    got = []
    while (p := mp.next_part()) is not None:
        got.append((p[0], b"".join(mp.part_chunks())))
    assert got == parts


def test_multipart_truncated_body_is_a_400():
    raw = body_of([("attributes", b"{}"), ("file", b"data")], b"BB")[:-20]
    reader = BodyReader(io.BytesIO(raw), {"Content-Length": str(len(raw))}, Throttle(lambda: None))
    mp = Multipart(reader, b"BB")
    with pytest.raises(ApiError) as ei:
        while mp.next_part() is not None:
            b"".join(mp.part_chunks())
    assert ei.value.status == 400


def test_chunked_request_body_is_decoded():
    raw = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\nNEXT REQUEST"
    f = io.BytesIO(raw)
    reader = BodyReader(f, {"Transfer-Encoding": "chunked"}, Throttle(lambda: None))
    assert reader.read_all() == b"hello world"
    assert f.read() == b"NEXT REQUEST"  # keep-alive: nothing of the next request was eaten


@given(size=st.integers(1, 10_000), a=st.integers(0, 12_000), b=st.integers(0, 12_000))
def test_parse_range_stays_inside_the_file(size, a, b):
    try:
        r = parse_range(f"bytes={a}-{b}", size)
    except ApiError as e:
        assert e.status == 416 and (a >= size or b < a)
        return
    start, length = r
    assert start == a and length >= 1 and start + length <= size and start + length - 1 <= b


def test_parse_range_forms():
    assert parse_range(None, 10) is None
    assert parse_range("bytes=-3", 10) == (7, 3)
    assert parse_range("bytes=4-", 10) == (4, 6)
    assert parse_range("items=1-2", 10) is None  # not understood: whole file, as RFC 9110 allows
    with pytest.raises(ApiError):
        parse_range("bytes=-0", 10)


@pytest.mark.parametrize("name,ok", [
    ("photo.jpg", True), ("a" * 255, True), ("ümlaut é.tif", True), ("with-dash_and (1).png", True),
    ("a" * 256, False), ("", False), (".", False), ("..", False), ("a/b", False), ("a\\b", False),
    (" x", False), ("x ", False), ("x\x00y", False), ("x\ny", False), ("x\x85y", False),
    ("x\u2028y", False),
    # Box refuses non-printable *ASCII*; these are ordinary in real file names
    ("写真\u300001.jpg", True), ("no\u00a0break.tif", True), ("👩\u200d🎨.png", True),
])
def test_box_name_rules(name, ok):
    assert (name_problem(name) is None) == ok


def test_rate_limit_window_and_retry_after():
    rl = RateLimits()
    rl.set(api_per_minute=2, uploads_per_minute=1)
    assert rl.check("u", False, now=0.0) is None
    assert rl.check("u", True, now=1.0) is None
    wait = rl.check("u", False, now=2.0)
    assert wait == pytest.approx(58.0)
    assert rl.check("other", True, now=2.0) is None  # per user
    assert rl.check("u", False, now=60.5) is None  # the first call left the window
    assert rl.check("u", True, now=61.5) is None

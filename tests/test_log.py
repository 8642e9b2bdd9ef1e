"""Logging: journal native protocol over a real datagram socket, stderr formats, redaction."""

from __future__ import annotations

import io
import logging
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from cfbox_watch import log as cflog


@pytest.fixture
def journal_socket(tmp_path):
    path = str(tmp_path / "journal.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    yield path, sock
    sock.close()


def _recv(sock) -> dict[str, str]:
    import array

    fds = array.array("i")
    data, ancdata, _flags, _addr = sock.recvmsg(1 << 20, socket.CMSG_SPACE(4 * fds.itemsize))
    for level, kind, cdata in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(cdata[: len(cdata) - (len(cdata) % fds.itemsize)])
    if fds:  # the memfd path for a record too large for one datagram
        with os.fdopen(fds[0], "rb") as f:
            f.seek(0)  # the sender's write left the shared offset at the end
            data = f.read()
    return cflog.decode_journal(data)


def _logger(handler: logging.Handler, name="cfbox_watch.test") -> logging.Logger:
    handler.addFilter(cflog.RedactFilter())
    lg = logging.getLogger(name)
    lg.handlers[:] = [handler]
    lg.setLevel(logging.DEBUG)
    lg.propagate = False
    return lg


def test_journal_record_carries_priority_and_structured_fields(journal_socket):
    path, sock = journal_socket
    lg = _logger(cflog.JournalHandler(path))
    lg.warning("uploaded %s", "shoot 1/a.jpg", extra=cflog.fields(
        MAPPING="acme-retouch", ACTION="uploaded", PATH="shoot 1/a.jpg", BOX_FILE_ID="123",
        SHA1="a" * 40, SIZE=2048, DURATION_MS=340))
    rec = _recv(sock)
    assert rec["MESSAGE"] == "uploaded shoot 1/a.jpg"
    assert rec["PRIORITY"] == "4"
    assert rec["SYSLOG_IDENTIFIER"] == "cfbox-watch"
    assert rec["MAPPING"] == "acme-retouch"
    assert rec["ACTION"] == "uploaded"
    assert rec["PATH"] == "shoot 1/a.jpg"
    assert rec["BOX_FILE_ID"] == "123"
    assert rec["SHA1"] == "a" * 40
    assert rec["SIZE"] == "2048"
    assert rec["DURATION_MS"] == "340"
    assert rec["LOGGER"] == "cfbox_watch.test"
    assert rec["CODE_FUNC"] == "test_journal_record_carries_priority_and_structured_fields"


def test_journal_multiline_and_invalid_field_names(journal_socket):
    path, sock = journal_socket
    lg = _logger(cflog.JournalHandler(path))
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        lg.error("failed", exc_info=True, extra={"fields": {"bad name": "x", "_PID": "1", "ok": "y"}})
    rec = _recv(sock)
    assert rec["PRIORITY"] == "3"
    assert rec["MESSAGE"].startswith("failed\nTraceback")
    assert "second line" in rec["MESSAGE"]
    assert rec["OK"] == "y"
    assert "BAD NAME" not in rec and "_PID" not in rec


def test_journal_large_record_goes_through_memfd(journal_socket):
    path, sock = journal_socket
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    lg = _logger(cflog.JournalHandler(path))
    big = "x" * 400_000  # larger than any datagram the kernel accepts by default
    lg.info(big, extra=cflog.fields(MAPPING="m"))
    rec = _recv(sock)
    assert rec["MESSAGE"] == big and rec["MAPPING"] == "m"


def test_journal_socket_gone_falls_back_to_prefixed_stderr(tmp_path):
    buf = io.StringIO()
    lg = _logger(cflog.JournalHandler(str(tmp_path / "nope.sock"), fallback=buf))
    lg.error("cannot reach Box", extra=cflog.fields(MAPPING="acme"))
    assert buf.getvalue() == "<3>cannot reach Box  MAPPING=acme\n"


def test_encode_decode_roundtrip():
    pairs = [("MESSAGE", "a\nb"), ("PATH", "ümlaut/ä.jpg"), ("EMPTY", "")]
    assert cflog.decode_journal(cflog.encode_journal(pairs)) == dict(pairs)
    assert cflog.encode_journal([("A", "1")]) == b"A=1\n"
    assert cflog.encode_journal([("A", "x\ny")]) == b"A\n" + (3).to_bytes(8, "little") + b"x\ny\n"


def test_prefix_format_every_line_gets_priority():
    buf = io.StringIO()
    h = logging.StreamHandler(buf)
    h.setFormatter(cflog.PrefixFormatter())
    lg = _logger(h)
    lg.info("line one\nline two", extra=cflog.fields(ACTION="uploaded"))
    lg.debug("dbg")
    assert buf.getvalue().splitlines() == ["<6>line one", "<6>line two  ACTION=uploaded", "<7>dbg"]


def test_terminal_lines_are_short_and_readable():
    buf = io.StringIO()
    h = logging.StreamHandler(buf)
    h.setFormatter(cflog.TerminalFormatter(tty=True))
    lg = _logger(h)
    lg.info("uploaded shoot/a.jpg", extra=cflog.fields(
        MAPPING="acme", ACTION="uploaded", PATH="shoot/a.jpg", SIZE=2_100_000, DURATION_MS=340,
        SHA1="0123456789abcdef"))
    lg.warning("slow")
    first, second = buf.getvalue().splitlines()
    assert first[8:] == " uploaded shoot/a.jpg  [acme, 2.1 MB, 340 ms, sha1 0123456789]"
    assert second.endswith(" warning: slow")


@pytest.mark.parametrize("secret, leaked", [
    ("Authorization: Bearer abcDEF123.456-xyz", "abcDEF123.456-xyz"),
    ('{"access_token": "T0KEN-value", "expires_in": 3600}', "T0KEN-value"),
    ("client_secret=s3cr3t&grant_type=x", "s3cr3t"),
    ("'clientSecret': 'zzTopSecret'", "zzTopSecret"),
    ('"passphrase": "open sesame-1"', "sesame"),
    ("-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIFabc\n-----END ENCRYPTED PRIVATE KEY-----", "MIIFabc"),
    ("assertion=eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJhYmMifQ.c2lnbmF0dXJlc2ln", "eyJpc3MiOiJhYmMifQ"),
])
def test_redaction(secret, leaked):
    out = cflog.redact(f"request failed: {secret} (status 400)")
    assert leaked not in out
    assert "request failed:" in out and "(status 400)" in out


def test_redaction_of_a_cut_off_private_key_swallows_the_rest():
    out = cflog.redact("bad key: -----BEGIN RSA PRIVATE KEY-----\nMIIE truncated")
    assert out == "bad key: [redacted private key]"


def test_redaction_leaves_ordinary_text_alone():
    text = "uploaded shoot/a.jpg (sha1 0a1b2c, 2 MB) to folder 1234; passphrase_hint missing"
    assert cflog.redact(text) == text


def test_redaction_filter_covers_args_fields_and_tracebacks():
    buf = io.StringIO()
    h = logging.StreamHandler(buf)
    h.setFormatter(cflog.TerminalFormatter(tty=False))
    lg = _logger(h)
    try:
        raise RuntimeError("token refresh failed: Bearer SECRETTOKEN")
    except RuntimeError:
        lg.exception("call %s failed", "with access_token=ARGSECRET",
                     extra=cflog.fields(PATH="x", NOTE="Bearer FIELDSECRET"))
    out = buf.getvalue()
    for s in ("SECRETTOKEN", "ARGSECRET", "FIELDSECRET"):
        assert s not in out
    assert "Traceback" in out and "[redacted]" in out


def test_under_journal_needs_matching_stderr(tmp_path):
    f = open(tmp_path / "err", "w")
    st = os.fstat(f.fileno())
    assert cflog.under_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, f)
    assert not cflog.under_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"}, f)
    assert not cflog.under_journal({}, f)
    env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}", "CFBOX_JOURNAL_SOCKET": str(tmp_path / "no")}
    assert cflog.choose_mode(env, f) == "prefix"
    (tmp_path / "no").touch()
    assert cflog.choose_mode(env, f) == "journal"
    assert cflog.choose_mode({}, f) == "terminal"
    f.close()


def test_subprocess_under_journal_stream_uses_native_protocol(tmp_path, journal_socket):
    """A child whose stderr is the file JOURNAL_STREAM names logs natively, with fields."""
    path, sock = journal_socket
    err = open(tmp_path / "stderr", "w")
    st = os.fstat(err.fileno())
    code = textwrap.dedent("""
        import logging
        from cfbox_watch.log import setup_logging, fields
        print(setup_logging("info"))
        logging.getLogger("cfbox_watch.x").info("hello", extra=fields(MAPPING="acme", ACTION="skipped"))
        logging.getLogger("cfbox_watch.x").debug("hidden")
    """)
    env = dict(os.environ, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}", CFBOX_JOURNAL_SOCKET=path)
    out = subprocess.run([sys.executable, "-c", code], stderr=err, stdout=subprocess.PIPE,
                         env=env, text=True, timeout=30)
    err.close()
    assert out.stdout.strip() == "journal"
    rec = _recv(sock)
    assert rec["MESSAGE"] == "hello" and rec["MAPPING"] == "acme" and rec["PRIORITY"] == "6"
    assert (tmp_path / "stderr").read_text() == ""

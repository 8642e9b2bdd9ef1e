"""The shipped unit files: systemd-analyze verify, the keys issue 5 asks for, exposure."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parent.parent / "systemd"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed here")


def _service(name: str) -> dict[str, list[str]]:
    """Key -> all values in [Service] (systemd allows repeated keys)."""
    out: dict[str, list[str]] = {}
    section = None
    for raw in (UNITS / name).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def _venv_copy(tmp_path: Path, name: str) -> Path:
    # verify insists that ExecStart's binary exists; point it at this venv's console script.
    exe = Path(sys.executable).parent / "cfbox-watch"
    if not exe.exists():
        pytest.skip(f"{exe} missing (package not installed in this environment)")
    text = (UNITS / name).read_text().replace("/usr/local/bin/cfbox-watch", str(exe))
    dest = tmp_path / name
    dest.write_text(text)
    return dest


@pytest.mark.parametrize("name", ["cfbox-watch.service", "cfbox-watch@.service"])
def test_units_have_what_issue_5_lists(name):
    s = _service(name)
    assert s["Type"] == ["notify"]
    assert s["ExecStart"][0].startswith("/usr/local/bin/cfbox-watch -c /etc/cfbox/")
    assert s["ExecStart"][0].endswith(" run")
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["Restart"] == ["on-failure"]
    assert s["User"] == ["cfbox"] and s["Group"] == ["cfbox"]
    assert s["StateDirectory"][0].startswith("cfbox-watch")
    assert s["ConfigurationDirectory"] == ["cfbox"]
    for key, value in [("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                       ("ProtectHome", "yes"), ("PrivateTmp", "yes"), ("PrivateDevices", "yes"),
                       ("CapabilityBoundingSet", "")]:
        assert s[key] == [value], key
    assert "@system-service" in s["SystemCallFilter"]
    # ~@privileged also removes chown, which the incoming side needs for `group:`; it must
    # be allowed again after the deny list (later entries win).
    filters = s["SystemCallFilter"]
    assert filters.index("@chown") > filters.index("~@privileged @resources")
    assert s["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    # The daemon's default shutdown_grace (20 s) must end before systemd's SIGKILL.
    from cfbox_watch.config_model import Config

    grace = Config.__dataclass_fields__["shutdown_grace"].default
    stop = int(re.match(r"(\d+)s$", s["TimeoutStopSec"][0]).group(1))
    assert grace < stop
    watchdog = int(re.match(r"(\d+)s$", s["WatchdogSec"][0]).group(1))
    assert watchdog >= 10
    text = (UNITS / name).read_text()
    assert "ReadWritePaths=" in text and "LoadCredential=" in text  # documented for admins


def test_template_is_per_instance():
    s = _service("cfbox-watch@.service")
    assert "/etc/cfbox/%i.yaml" in s["ExecStart"][0]
    assert s["StateDirectory"] == ["cfbox-watch/%i"]


@needs_analyze
@pytest.mark.parametrize("name, instance", [("cfbox-watch.service", "cfbox-watch.service"),
                                            ("cfbox-watch@.service", "cfbox-watch@acme.service")])
def test_systemd_analyze_verify(tmp_path, name, instance):
    _venv_copy(tmp_path, name)
    out = subprocess.run([ANALYZE, "verify", str(tmp_path / instance)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    # verify prints warnings with rc 0 for some mistakes (unknown keys, bad values)
    assert "Unknown key" not in out.stderr and "Failed to parse" not in out.stderr, out.stderr


@needs_analyze
def test_systemd_analyze_security_exposure_is_ok_or_better(tmp_path):
    unit = _venv_copy(tmp_path, "cfbox-watch.service")
    out = subprocess.run([ANALYZE, "security", "--offline=true", str(unit)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    if "--offline" in out.stderr and "unrecognized" in out.stderr:
        pytest.skip("this systemd-analyze has no --offline")
    m = re.search(r"Overall exposure level for \S+: ([\d.]+) (\w+)", out.stdout)
    assert m, out.stdout + out.stderr
    assert float(m.group(1)) <= 2.0, m.group(0)  # 2.0 and below is "OK" in systemd's scale


MDWE_EXEC = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:   # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    sys.exit(99)
os.execv(sys.argv[1], sys.argv[1:])
"""


def test_memory_deny_write_execute_holds_for_the_whole_stack(tmp_path, emulator):
    """The unit sets MemoryDenyWriteExecute=yes; systemd enforces it with the kernel's
    PR_SET_MDWE where available.  Run a real `once` (JWT signing, HTTP, inotify via ctypes)
    under that same kernel switch: a W+X mapping anywhere would kill it."""
    import yaml

    from cfbox_watch.demo import png_bytes

    root = tmp_path / "studio"
    (root / "out").mkdir(parents=True)
    (root / "out" / "a.png").write_bytes(png_bytes(8, 8, 1))
    cfg = tmp_path / "cfbox.yaml"
    cfg.write_text(yaml.safe_dump({
        "state_dir": str(root / "state"), "settle_time": "0.2s",
        "connections": {"emu": emulator.connection()},
        "post_production": [{"name": "acme", "connection": "emu", "outgoing": str(root / "out"),
                             "upload_folder_id": emulator.folders["upload"],
                             "download_folder_id": emulator.folders["download"],
                             "incoming": str(root / "in")}]}))
    out = subprocess.run([sys.executable, "-c", MDWE_EXEC, sys.executable, "-m", "cfbox_watch",
                          "-c", str(cfg), "once"], capture_output=True, text=True, timeout=120)
    if out.returncode == 99:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux < 6.3)")
    assert out.returncode == 0, out.stderr
    # ... and the switch really bites: a writable+executable mapping is refused.
    probe = subprocess.run([sys.executable, "-c", MDWE_EXEC, sys.executable, "-c",
                            "import mmap; mmap.mmap(-1, 4096, prot=7)"],
                           capture_output=True, text=True, timeout=60)
    assert probe.returncode != 0 and "Permission denied" in probe.stderr
    assert "a.png" in emulator.control.files(emulator.folders["upload"])

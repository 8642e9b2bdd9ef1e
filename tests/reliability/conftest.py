"""Fixtures for the reliability scenarios: `studio(**config)` builds a Studio on the
emulator fixture and, at teardown, kills what is left and scans every output it produced
for secrets (scenario 13 runs inside every scenario, and once more over the session)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Studio  # noqa: E402


@pytest.fixture
def studio(tmp_path, emulator):
    made: list[Studio] = []

    def make(**kw) -> Studio:
        kw.setdefault("name", f"studio{len(made)}")
        s = Studio(tmp_path, emulator, **kw)
        made.append(s)
        return s

    try:
        yield make
    finally:
        for s in made:
            s.close()
    for s in made:
        s.assert_no_secrets()

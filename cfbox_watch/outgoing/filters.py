"""Include/exclude globs for the outgoing side.

Excludes are matched against every component of the relative path, so that a hidden
or Capture One cache *folder* hides everything below it, and a temp-file pattern
matches the file name wherever it sits.  Includes are matched against the file name
only (studios think "*.jpg", not "shoot/*/*.jpg"); a pattern containing "/" is
matched against the whole relative path instead, for the rare admin who needs it.
Matching ignores case: exports from macOS and Windows machines spell
"Thumbs.db" / "THUMBS.DB" and "*.JPG" either way.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Iterable


def _match(name: str, patterns: Iterable[str]) -> bool:
    low = name.lower()
    return any(fnmatchcase(low, p.lower()) for p in patterns)


def _match_path(relpath: str, patterns: Iterable[str]) -> bool:
    parts = relpath.split("/")
    for p in patterns:
        if "/" in p:
            if fnmatchcase(relpath.lower(), p.lower()):
                return True
        elif any(fnmatchcase(part.lower(), p.lower()) for part in parts):
            return True
    return False


def dir_excluded(reldir: str, exclude: Iterable[str]) -> bool:
    """True when a folder (relative path, '/'-separated) must not be descended into."""
    return bool(reldir) and _match_path(reldir, exclude)


def file_wanted(relpath: str, include: Iterable[str], exclude: Iterable[str]) -> bool:
    """True when a file (relative path, '/'-separated) belongs on Box."""
    if _match_path(relpath, exclude):
        return False
    include = tuple(include)
    name = relpath.rsplit("/", 1)[-1]
    for p in include:
        if "/" in p:
            if fnmatchcase(relpath.lower(), p.lower()):
                return True
        elif fnmatchcase(name.lower(), p.lower()):
            return True
    return False

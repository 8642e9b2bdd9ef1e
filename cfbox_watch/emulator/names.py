"""Box's item-name rules, as the server enforces them.

Kept inside the emulator (not shared with the daemon's own checks) on purpose: the
emulator is the referee, so a bug in the daemon's name logic must not be mirrored here.
"""

from __future__ import annotations

import unicodedata

MAX_NAME = 255


def name_problem(name: object) -> tuple[str, str] | None:
    """Return (code, message) when Box would refuse `name`, else None."""
    if not isinstance(name, str) or name == "":
        return "item_name_invalid", "Item name must be a non-empty string"
    if len(name) > MAX_NAME:
        return "item_name_too_long", f"Item name is longer than {MAX_NAME} characters"
    if name in (".", ".."):
        return "item_name_invalid", "Item name cannot be '.' or '..'"
    if "/" in name or "\\" in name:
        return "item_name_invalid", "Item name cannot contain '/' or '\\'"
    if name != name.strip(" "):
        return "item_name_invalid", "Item name cannot start or end with a space"
    # Box documents "non-printable ASCII characters"; str.isprintable() would also refuse
    # the no-break and ideographic spaces of real (Japanese, macOS) file names.
    if any(unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp") for ch in name):
        return "item_name_invalid", "Item name cannot contain non-printable characters"
    return None


def name_key(name: str) -> str:
    """Box compares names in one folder without regard to case."""
    return name.casefold()

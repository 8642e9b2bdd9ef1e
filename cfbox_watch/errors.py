"""The project's exception families.

The daemon's behaviour depends on *what kind* of failure happened, not on which
library raised it: a user mistake is printed without a traceback, a retryable Box
failure keeps the item queued, a setup failure stops one mapping with advice, and an
item failure marks only that file.  Every layer translates foreign exceptions into
these once, at its edge (the Box adapter for the SDK, config.py for YAML).
"""

from __future__ import annotations

EX_OK = 0
EX_FAILURE = 1
EX_USAGE = 64
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_TEMPFAIL = 75
EX_CONFIG = 78


class CfboxError(Exception):
    """Base class; `str(err)` is a complete, secret-free message for a human."""

    exit_code = EX_FAILURE


class UserError(CfboxError):
    """A mistake the user can fix (bad arguments, missing file); printed, no traceback."""

    exit_code = EX_USAGE


class ConfigError(UserError):
    """The configuration (YAML or a Box config.json) is invalid.

    `problems` holds one line per problem, each naming the file and the key path,
    so that an admin can fix everything in one go.
    """

    exit_code = EX_CONFIG

    def __init__(self, problems: list[str] | str):
        if isinstance(problems, str):
            problems = [problems]
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class BoxError(CfboxError):
    """A failed Box call, already stripped of tokens and secrets."""

    exit_code = EX_UNAVAILABLE

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.request_id = request_id


class RetryableError(BoxError):
    """Box is busy or unreachable (429, 5xx, 202-not-yet, network); try the job later."""

    exit_code = EX_TEMPFAIL

    def __init__(self, message: str, *, retry_after: float | None = None, **kw):
        super().__init__(message, **kw)
        self.retry_after = retry_after


class SetupError(BoxError):
    """The Box side is set up wrongly (app not authorized, key wrong, folder not shared,
    missing scope); retrying will not help until an admin acts.  Stops one mapping."""

    exit_code = EX_CONFIG


class ItemError(BoxError):
    """A problem with one item only (bad name, too large, vanished); other work goes on."""


class NameConflictError(ItemError):
    """409 item_name_in_use: an item of that name already exists in the folder.

    Box documents `context_info.conflicts` as a list, its own clients read a single
    object; the adapter accepts both and fills these fields from the first conflict.
    """

    def __init__(
        self,
        message: str,
        *,
        conflict_id: str | None = None,
        conflict_type: str | None = None,
        conflict_sha1: str | None = None,
        conflict_etag: str | None = None,
        **kw,
    ):
        super().__init__(message, **kw)
        self.conflict_id = conflict_id
        self.conflict_type = conflict_type
        self.conflict_sha1 = conflict_sha1
        self.conflict_etag = conflict_etag


class PreconditionFailedError(ItemError):
    """412: the Box item changed since we read its etag (If-Match)."""


class NotFoundError(ItemError):
    """404 on a single item (file or folder) that is not a mapping's root folder."""


class SessionExpiredError(ItemError):
    """410: a chunked upload session expired or failed; start a new one."""

"""Every Box call cfbox-watch makes, and the one place Box failures get a meaning.

The engines think in three kinds of failure (try again later, an admin must fix the
set-up, this one item is bad) and never see `box_sdk_gen`; this module is the only
importer of the SDK, so an SDK upgrade or a Box quirk is handled here once.

Retries: the SDK's default strategy retries 429/5xx/network errors and sleeps on
Retry-After itself, while the engines already retry whole jobs with backoff.  Both
together would multiply the attempts and hide outages, so the SDK gets a strategy
that retries only a 401 (after refreshing the token, once); everything else comes
back here at once and becomes a `RetryableError` carrying Retry-After.

Thread safety: one `BoxRemote` serves every worker thread of one connection.  The
SDK managers are stateless; the requests session has a pool sized for many
workers; token refreshes are serialised so a burst of 401s makes one refresh.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import io
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import requests
from requests.adapters import HTTPAdapter

from box_sdk_gen import BoxClient, BoxJWTAuth, JWTConfig
from box_sdk_gen.box.errors import BoxAPIError, BoxSDKError
from box_sdk_gen.internal.utils import DefaultPrivateKeyDecryptor, PrivateKeyDecryptor
from box_sdk_gen.managers.files import UpdateFileByIdParent
from box_sdk_gen.managers.folders import CreateFolderParent
from box_sdk_gen.managers.webhooks import (
    CreateWebhookTarget,
    CreateWebhookTargetTypeField,
    CreateWebhookTriggers,
    UpdateWebhookByIdTriggers,
)
from box_sdk_gen.managers.uploads import (
    PreflightFileUploadCheckParent,
    UploadFileAttributes,
    UploadFileAttributesParentField,
    UploadFileVersionAttributes,
)
from box_sdk_gen.networking.base_urls import BaseUrls
from box_sdk_gen.networking.fetch_options import FetchOptions, ResponseFormat
from box_sdk_gen.networking.box_network_client import BoxNetworkClient
from box_sdk_gen.networking.retries import RetryStrategy
from box_sdk_gen.networking.timeout_config import TimeoutConfig
from box_sdk_gen.schemas.upload_part import UploadPart
from box_sdk_gen.internal.utils import date_time_from_string

from cfbox_watch.config_model import Connection
from cfbox_watch.errors import (
    BoxError,
    ConfigError,
    ItemError,
    NameConflictError,
    NotFoundError,
    PreconditionFailedError,
    RetryableError,
    SessionExpiredError,
    SetupError,
)
from cfbox_watch.ratelimit import RateLimiter

log = logging.getLogger("cfbox_watch.box_adapter")

LIST_FIELDS = [
    "name", "size", "sha1", "etag", "file_version", "modified_at",
    "content_modified_at", "parent",
]
LIST_PAGE = 1000
EVENTS_MAX = 500
CREDENTIAL_PREFIX = "credential:"
# How much longer than the server's own hold we wait on a long-poll, so the server's
# answer ("reconnect") normally arrives before our read timeout does.
LONG_POLL_MARGIN = 5.0
# The Authorization header each thread's last request carried: a 401 for a token that
# another thread already replaced retries with the new one instead of signing in again,
# and a 401 for the current token always signs in (a time window would retry a token
# revoked right after a refresh with itself, and fail).
_SENT = threading.local()
MAX_401_RETRIES = 2


# --------------------------------------------------------------------------- data

@dataclass(frozen=True)
class RemoteItem:
    id: str
    type: str                      # "file" | "folder"
    name: str
    parent_id: str | None = None
    size: int | None = None
    sha1: str | None = None        # hex, files only
    etag: str | None = None
    version_id: str | None = None  # file_version.id
    modified_at: str | None = None
    content_modified_at: str | None = None


@dataclass(frozen=True)
class UploadSession:
    id: str
    part_size: int
    total_parts: int
    expires_at: str | None


@dataclass(frozen=True)
class UploadedPart:
    part_id: str
    offset: int
    size: int
    sha1: str | None               # sha1 hex of the part


@dataclass(frozen=True)
class BoxEvent:
    event_id: str
    event_type: str
    item: RemoteItem | None
    created_at: str | None


def item_from_json(d: Mapping[str, Any]) -> RemoteItem:
    """A RemoteItem from Box's JSON for a file or folder (mini or full)."""
    parent = d.get("parent") or None
    version = d.get("file_version") or None
    size = d.get("size")
    return RemoteItem(
        id=str(d.get("id")),
        type=str(d.get("type") or ""),
        name=str(d.get("name") or ""),
        parent_id=str(parent["id"]) if isinstance(parent, Mapping) and parent.get("id") is not None else None,
        size=int(size) if size is not None else None,
        sha1=d.get("sha1") or None,
        etag=str(d["etag"]) if d.get("etag") is not None else None,
        version_id=str(version["id"]) if isinstance(version, Mapping) and version.get("id") is not None else None,
        modified_at=d.get("modified_at"),
        content_modified_at=d.get("content_modified_at"),
    )


def event_from_json(d: Mapping[str, Any]) -> BoxEvent:
    source = d.get("source")
    item = None
    if isinstance(source, Mapping) and source.get("type") in ("file", "folder") and source.get("id"):
        item = item_from_json(source)
    return BoxEvent(
        event_id=str(d.get("event_id") or ""),
        event_type=str(d.get("event_type") or ""),
        item=item,
        created_at=d.get("created_at"),
    )


@dataclass(frozen=True)
class RemoteWebhook:
    id: str
    target_id: str | None
    target_type: str | None        # "folder" | "file"
    address: str
    triggers: tuple[str, ...]


def webhook_from_json(d: Mapping[str, Any]) -> RemoteWebhook:
    target = d.get("target") or {}
    return RemoteWebhook(id=str(d.get("id")),
                         target_id=str(target["id"]) if target.get("id") is not None else None,
                         target_type=target.get("type"), address=str(d.get("address") or ""),
                         triggers=tuple(str(t) for t in d.get("triggers") or ()))


def _raw(obj: Any) -> dict:
    """The JSON Box sent for an SDK object (the SDK keeps it), else its dict form."""
    raw = getattr(obj, "raw_data", None)
    if isinstance(raw, dict) and raw:
        return raw
    return obj.to_dict()


def sha1_b64(hex_digest: str) -> str:
    """Box wants the hex SHA-1 on direct uploads but base64 in `Digest:` headers."""
    return base64.b64encode(bytes.fromhex(hex_digest)).decode("ascii")


# --------------------------------------------------------------------------- errors

def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if value is None:
        return None
    value = str(value).strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


def first_conflict(context_info: Any) -> dict:
    """Box's spec gives `context_info.conflicts` as a list; Box's own clients read a
    single object.  Accept both and return the first conflict (or {})."""
    if not isinstance(context_info, Mapping):
        return {}
    conflicts = context_info.get("conflicts")
    if isinstance(conflicts, list):
        conflicts = conflicts[0] if conflicts else None
    return dict(conflicts) if isinstance(conflicts, Mapping) else {}


@dataclass(frozen=True)
class Failure:
    """The plain facts of one failed Box request, for `classify`."""

    status: int                    # HTTP status; 0 for a network failure
    code: str | None = None        # Box's `code`, or OAuth's `error`
    message: str = ""              # Box's `message` or OAuth's `error_description`
    context_info: Any = None
    retry_after: float | None = None
    request_id: str | None = None
    token_request: bool = False    # the failure came from POST /oauth2/token
    what: str = "Box call"         # e.g. "upload of IMG_1.jpg to folder 123"
    root_label: str | None = None  # set when the request was about a mapping's root folder
    root_id: str | None = None     # that folder's id
    service_login: str | None = None
    client_id: str | None = None
    config_path: str | None = None


_TRANSIENT_409 = {"name_temporarily_reserved", "operation_blocked_temporary", "conflict"}
_ITEM_403 = {"file_size_limit_exceeded", "access_denied_item_locked", "item_name_invalid"}
_RETRYABLE_400 = {"bad_digest"}


def _box_says(f: Failure) -> str:
    parts = [str(f.status) if f.status else "network"]
    if f.code:
        parts.append(f.code)
    text = " ".join(parts)
    if f.message:
        text += f": {f.message}"
    return text


def _oauth_setup_error(f: Failure) -> SetupError:
    cid = f" (client ID {f.client_id})" if f.client_id else ""
    cfg = f.config_path or "the app's config.json"
    desc = (f.message or "").lower()
    if f.code == "unauthorized_client":
        msg = (f"Box says the app{cid} is not authorized in this enterprise. A Box admin must "
               "approve it: Admin Console > Apps > Platform Apps Manager > Server Authentication "
               "Apps > Add App, paste the client ID; re-authorize it there after changing scopes.")
    elif f.code == "invalid_client":
        msg = (f"Box rejected the app's client ID or client secret{cid}. The clientSecret in {cfg} "
               "does not match the app: download the config.json again from the Developer Console "
               "(your app > Configuration) or copy the current client secret from there.")
    elif f.code == "invalid_grant" and ("exp" in desc or "date" in desc or "time" in desc):
        msg = ("Box rejected the sign-in because this machine's clock is off by more than about "
               "30 seconds. Synchronise the clock (timedatectl set-ntp true, or chrony/ntpd).")
    elif f.code == "invalid_grant" and "kid" in desc:
        msg = (f"Box does not know the public key named in {cfg} (publicKeyID). The key pair was "
               "removed or replaced in the Developer Console: add the public key there again or "
               "download a fresh config.json.")
    elif f.code == "invalid_grant" and "sub" in desc:
        msg = (f"Box rejected the enterpriseID in {cfg}: it must be the enterprise that authorized "
               "the app (Admin Console > Account & Billing shows it); download the config.json again.")
    elif f.code == "invalid_grant":
        msg = (f"Box refused the app's sign-in ({f.message or 'invalid_grant'}). Check that the key "
               f"pair, publicKeyID and enterpriseID in {cfg} belong to this app.")
    else:
        msg = (f"Box refused the app's sign-in ({_box_says(f)}). Check the app's set-up in the "
               "Developer Console and its authorization in the Admin Console.")
    return SetupError(msg, status=f.status or None, code=f.code or "auth_failed", request_id=f.request_id)


def classify(f: Failure) -> BoxError:
    """Turn one failed request into the project's error kind.  Pure, so every rule is
    unit-tested without Box; messages never include request headers or bodies."""
    kw = dict(status=f.status or None, code=f.code, request_id=f.request_id)
    says = _box_says(f)
    if f.token_request and f.status in (400, 401, 403):
        return _oauth_setup_error(f)
    if f.status == 0:
        if "Timeout" in (f.message or ""):
            return RetryableError(f"{f.what}: Box did not answer in time ({f.message}); will retry", **kw)
        return RetryableError(f"{f.what}: Box could not be reached ({f.message or 'network error'}); "
                              "will retry", **kw)
    if f.status == 429:
        return RetryableError(f"{f.what}: Box is rate limiting this app ({says}); will retry"
                              + (f" after {f.retry_after:g} s" if f.retry_after is not None else ""),
                              retry_after=f.retry_after, **kw)
    if f.status >= 500:
        return RetryableError(f"{f.what}: Box had a server error ({says}); will retry",
                              retry_after=f.retry_after, **kw)
    if f.status == 202:
        return RetryableError(f"{f.what}: Box is still processing the file; will retry"
                              + (f" after {f.retry_after:g} s" if f.retry_after is not None else ""),
                              retry_after=f.retry_after, **kw)
    if f.status == 401:
        return SetupError(f"{f.what}: Box rejected the app's access token even after signing in "
                          f"again ({says}). Check that the app is still authorized in the Admin "
                          "Console (Apps > Platform Apps Manager) and not disabled.", **kw)
    if f.status == 403:
        if f.code in _ITEM_403:
            return ItemError(f"{f.what}: Box refused this item ({says})", **kw)
        who = f" ({f.service_login})" if f.service_login else ""
        if f.code in ("insufficient_scope", "access_denied_insufficient_permissions") or "scope" in (f.message or "").lower():
            return SetupError(
                f"{f.what}: the app's service account{who} lacks permission ({says}). Give the app "
                "'Read all files and folders' and 'Write all files and folders' in the Developer "
                "Console (Configuration > Application Scopes), re-authorize it in the Admin Console, "
                "and make sure the folder is shared with the service account as Editor.", **kw)
        if f.code == "storage_limit_exceeded":
            return SetupError(f"{f.what}: the Box account is out of storage ({says}); free space "
                              "or raise the quota.", **kw)
        return SetupError(f"{f.what}: Box denied access ({says}). Share the folder with the app's "
                          f"service account{who} as Editor and check the app's scopes.", **kw)
    if f.status == 404:
        if f.root_label:
            who = f.service_login or "the app's service account (its login is shown by `cfbox-watch check`)"
            return SetupError(
                f"{f.root_label}: the Box folder{' ' + f.root_id if f.root_id else ''} is not visible to the service account {who} "
                f"({says}). Share the folder with that login as Editor (Box web app > folder > "
                "Share > Invite people), or fix the folder id.", code=f.code or "not_found",
                status=404, request_id=f.request_id)
        return NotFoundError(f"{f.what}: not found on Box ({says})", **kw)
    if f.status == 409:
        if f.code == "item_name_in_use":
            c = first_conflict(f.context_info)
            return NameConflictError(
                f"{f.what}: an item of that name already exists on Box"
                + (f" (id {c.get('id')})" if c.get("id") else ""),
                conflict_id=str(c["id"]) if c.get("id") is not None else None,
                conflict_type=c.get("type"),
                conflict_sha1=c.get("sha1"),
                conflict_etag=str(c["etag"]) if c.get("etag") is not None else None,
                **kw)
        if f.code in _TRANSIENT_409:
            return RetryableError(f"{f.what}: Box is busy with the same name ({says}); will retry",
                                  retry_after=f.retry_after, **kw)
        return ItemError(f"{f.what}: Box refused it ({says})", **kw)
    if f.status == 412:
        return PreconditionFailedError(f"{f.what}: the item changed on Box since it was read ({says})", **kw)
    if f.status == 410:
        return SessionExpiredError(f"{f.what}: the upload session expired or failed ({says}); "
                                   "start a new one", **kw)
    if f.status == 400 and f.code in _RETRYABLE_400:
        return RetryableError(f"{f.what}: the content Box received does not match its SHA-1 "
                              f"({says}); the file changed or was corrupted in transit; will retry", **kw)
    return ItemError(f"{f.what}: Box refused it ({says})", **kw)


# --------------------------------------------------------------------------- SDK plumbing

class _Accepted(Exception):
    """A 202 the SDK would treat as success (commit not done, download not ready)."""

    def __init__(self, retry_after: float | None):
        super().__init__("202 Accepted")
        self.retry_after = retry_after


class _RefreshOnce(RetryStrategy):
    """Retry a request only after a 401 (at most twice), with a fresh token; never anything else.

    Concurrent 401s (all workers at token expiry) share one refresh."""

    def __init__(self):
        super().__init__()
        self._lock = threading.Lock()
        self.refreshes = 0

    def should_retry(self, fetch_options, fetch_response, attempt_number: int) -> bool:
        # Up to three sends: the token can die again between another thread's refresh
        # and our retry (short-lived tokens); a real refusal fails in the sign-in itself.
        if fetch_response.status != 401 or fetch_options.auth is None or attempt_number > MAX_401_RETRIES:
            return False
        with self._lock:
            current = fetch_options.auth.token_storage.get()
            sent = getattr(_SENT, "authorization", None)
            if current is None or sent is None or sent == f"Bearer {current.access_token}":
                fetch_options.auth.refresh_token(network_session=fetch_options.network_session)
                self.refreshes += 1
        return True

    def retry_after(self, fetch_options, fetch_response, attempt_number: int) -> float:
        return 0.0


class _Transport(BoxNetworkClient):
    """The SDK's HTTP client plus our counting, rate limiting and 202/429 handling."""

    def __init__(self, limiter: RateLimiter, pool_size: int = 32):
        session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        super().__init__(requests_session=session)
        self.limiter = limiter
        self._count_lock = threading.Lock()
        self.count = 0
        self.local = threading.local()

    def bump(self) -> None:
        with self._count_lock:
            self.count += 1

    def _prepare_request(self, options, reauthenticate: bool = False):
        # Wait for the rate limiter before the Authorization header is made: a header
        # made first can carry a token that expires while the call waits its turn.
        if not str(options.url).rstrip("/").endswith("/oauth2/token"):
            self.limiter.acquire_call()
        return super()._prepare_request(options=options, reauthenticate=reauthenticate)

    def _make_request(self, request):
        token_call = request.url.rstrip("/").endswith("/oauth2/token")
        self.local.token_call = token_call
        self.bump()
        _SENT.authorization = (request.headers or {}).get("Authorization")
        response = super()._make_request(request)
        net = response.network_response
        self.local.last_response = net
        if net is not None and net.status_code == 429:
            wait = parse_retry_after(net.headers.get("Retry-After"))
            wait = wait if wait is not None else 1.0
            log.warning("Box is rate limiting this connection (429); pausing its calls for %.1f s", wait)
            self.limiter.pause(wait)
        return response

    def fetch(self, options):
        self.local.token_call = False
        response = super().fetch(options)
        if response.status == 202:
            last = getattr(self.local, "last_response", None)
            if last is not None:
                last.close()
            raise _Accepted(parse_retry_after(response.headers.get("Retry-After")))
        return response


class _CachedKey(PrivateKeyDecryptor):
    """Decrypt the private key once: every token refresh would otherwise redo the
    slow passphrase derivation, and a bad key must surface as set-up advice, not as
    a cryptography traceback in the middle of a transfer."""

    def __init__(self, where: str):
        self._where = where
        self._key = None
        self._lock = threading.Lock()

    def decrypt_private_key(self, encryptedPrivateKey: str, passphrase: str):
        with self._lock:
            if self._key is None:
                try:
                    self._key = DefaultPrivateKeyDecryptor().decrypt_private_key(encryptedPrivateKey, passphrase)
                except Exception as e:  # ValueError, TypeError, UnsupportedAlgorithm, ...
                    text = str(e).lower()
                    if "password" in text or "decrypt" in text:
                        advice = ("the passphrase does not open the private key; copy the passphrase "
                                  "and key from the same Developer Console download, or generate a "
                                  "new key pair")
                    else:
                        advice = ("the private key is not a readable PEM key; download the "
                                  "config.json again from the Developer Console")
                    raise SetupError(f"{self._where}: boxAppSettings.appAuth.privateKey: {advice}",
                                     code="bad_private_key") from None
            return self._key


def resolve_jwt_path(conn: Connection) -> Path:
    """`credential:NAME` means a file systemd placed in $CREDENTIALS_DIRECTORY."""
    text = str(conn.jwt_config)
    if text.startswith(CREDENTIAL_PREFIX):
        cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
        name = text[len(CREDENTIAL_PREFIX):]
        if not cred_dir:
            raise SetupError(f"connections.{conn.name}.jwt_config: {text} needs $CREDENTIALS_DIRECTORY "
                             "(run under systemd with LoadCredential=) or give a file path",
                             code="bad_jwt_config")
        return Path(cred_dir) / name
    return Path(text)


def _read_config_json(conn: Connection, path: Path) -> dict:
    try:
        from cfbox_watch.config import read_jwt_config
    except ImportError:  # pragma: no cover - config.py is part of the package
        read_jwt_config = None
    if read_jwt_config is not None:
        try:
            return dict(read_jwt_config(Connection(**{**conn.__dict__, "jwt_config": path})))
        except ConfigError as e:
            raise SetupError(str(e), code="bad_jwt_config") from None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise SetupError(f"connections.{conn.name}.jwt_config: cannot read {path} "
                         f"({e.__class__.__name__})", code="bad_jwt_config") from None


def _secrets_of(cfg: Mapping[str, Any]) -> list[str]:
    app = cfg.get("boxAppSettings") or {}
    auth = app.get("appAuth") or {}
    key = auth.get("privateKey")
    out = [app.get("clientSecret"), key, auth.get("passphrase")]
    if isinstance(key, str):  # fragments of the key are as secret as the whole
        out += [ln.strip() for ln in key.splitlines() if len(ln.strip()) >= 16 and "-----" not in ln]
    keys = cfg.get("webhooks") or {}
    if isinstance(keys, Mapping):
        out += [keys.get("primaryKey"), keys.get("secondaryKey")]
    return [s for s in out if isinstance(s, str) and len(s) >= 4]


# --------------------------------------------------------------------------- the adapter

class BoxRemote:
    """One Box connection (one Custom App's service account), shared by all workers."""

    def __init__(self, client: BoxClient, *, auth: BoxJWTAuth, transport: _Transport,
                 retry: _RefreshOnce, limiter: RateLimiter, connection: Connection | None = None,
                 secrets: Iterable[str] = (), client_id: str | None = None,
                 config_path: str | None = None, read_timeout: float = 60.0,
                 connect_timeout: float = 10.0):
        self._client = client
        self._auth = auth
        self._transport = transport
        self._retry = retry
        self.limiter = limiter
        self.connection = connection
        self._secrets = [s for s in secrets if s]
        self._client_id = client_id
        self._config_path = config_path
        self._read_timeout = read_timeout
        self._connect_timeout = connect_timeout
        self._roots: dict[str, str] = {}
        self._roots_lock = threading.Lock()
        self._me: dict | None = None
        self._sign_in_lock = threading.Lock()
        self.page_size = LIST_PAGE            # tests use small pages to exercise paging
        self.long_poll_margin = LONG_POLL_MARGIN

    # -- construction ------------------------------------------------------

    @classmethod
    def from_connection(cls, conn: Connection, *, root_folders: Mapping[str, str] | None = None,
                        limiter: RateLimiter | None = None) -> "BoxRemote":
        """Build the JWT client for the app's service account (enterprise subject).

        Raises SetupError when the config.json or its key cannot be used; makes no
        network call (the first Box call signs in)."""
        path = resolve_jwt_path(conn)
        cfg = _read_config_json(conn, path)
        where = str(path)
        decryptor = _CachedKey(where)
        try:
            jwt_config = JWTConfig.from_config_json_string(json.dumps(cfg), private_key_decryptor=decryptor)
        except Exception as e:  # the SDK's deserializer raises assorted errors on odd shapes
            raise SetupError(f"{where}: not a Box Developer Console config.json for a JWT app "
                             f"({e.__class__.__name__}); download it again", code="bad_jwt_config") from None
        if not jwt_config.enterprise_id:
            raise SetupError(f"{where}: enterpriseID is missing; cfbox-watch signs in as the app's "
                             "service account (the enterprise subject)", code="bad_jwt_config")
        decryptor.decrypt_private_key(jwt_config.private_key, jwt_config.private_key_passphrase)
        auth = BoxJWTAuth(config=jwt_config)
        limiter = limiter or RateLimiter.for_connection(conn)
        transport = _Transport(limiter)
        retry = _RefreshOnce()
        client = BoxClient(auth=auth)
        client = client.with_custom_base_urls(BaseUrls(
            base_url=(conn.base_url or "https://api.box.com").rstrip("/"),
            upload_url=(conn.upload_url or "https://upload.box.com/api").rstrip("/"),
        ))
        client = client.with_timeouts(TimeoutConfig(
            connection_timeout_ms=int(conn.connect_timeout * 1000),
            read_timeout_ms=int(conn.read_timeout * 1000),
        ))
        ns = client.network_session.with_retry_strategy(retry).with_network_client(transport)
        client = BoxClient(auth=auth, network_session=ns)
        remote = cls(client, auth=auth, transport=transport, retry=retry, limiter=limiter,
                     connection=conn, secrets=_secrets_of(cfg),
                     client_id=(cfg.get("boxAppSettings") or {}).get("clientID"),
                     config_path=where, read_timeout=conn.read_timeout,
                     connect_timeout=conn.connect_timeout)
        for folder_id, label in (root_folders or {}).items():
            remote.register_root(folder_id, label)
        return remote

    def register_root(self, folder_id: str, label: str) -> None:
        """Mark a mapping's root folder: a 404 on it means "not shared with the service
        account" (SetupError, stops the mapping), not "this item vanished"."""
        with self._roots_lock:
            self._roots[str(folder_id)] = label

    # -- plumbing ------------------------------------------------------------

    def calls(self) -> int:
        """HTTP requests made to Box so far, including sign-ins and long-polls."""
        return self._transport.count

    def token_refreshes(self) -> int:
        return self._retry.refreshes

    def _scrub(self, text: str) -> str:
        secrets = list(self._secrets)
        try:
            token = self._auth.token_storage.get()
        except Exception:
            token = None
        if token is not None and getattr(token, "access_token", None):
            secrets.append(token.access_token)
        for s in secrets:
            if s and s in text:
                text = text.replace(s, "[redacted]")
        return text

    def _root(self, folder_ids: Iterable[str | None]) -> tuple[str | None, str | None]:
        """(folder id, label) of the first registered mapping root among folder_ids."""
        with self._roots_lock:
            for fid in folder_ids:
                if fid is not None and str(fid) in self._roots:
                    return str(fid), self._roots[str(fid)]
        return None, None

    def _translate(self, exc: BaseException, what: str, folders: Iterable[str | None]) -> BoxError:
        token_call = bool(getattr(self._transport.local, "token_call", False))
        if isinstance(exc, _Accepted):
            f = Failure(status=202, retry_after=exc.retry_after, what=what)
        elif isinstance(exc, BoxAPIError):
            info = exc.response_info
            body = info.body if isinstance(info.body, Mapping) else {}
            oauth = "error" in body and "code" not in body
            headers = info.headers or {}
            retry_after = None
            for k, v in headers.items():
                if k.lower() == "retry-after":
                    retry_after = parse_retry_after(v)
            f = Failure(
                status=int(info.status_code or 0),
                code=(body.get("error") if oauth else info.code) or None,
                message=str((body.get("error_description") if oauth else body.get("message")) or ""),
                context_info=info.context_info,
                retry_after=retry_after,
                request_id=info.request_id,
                token_request=oauth or token_call or "/oauth2/token" in (exc.request_info.url or ""),
                what=what,
            )
        elif isinstance(exc, BoxSDKError):
            inner = exc.error
            if inner is not None:  # the request never got an HTTP answer
                f = Failure(status=0, message=inner.__class__.__name__, what=what)
            else:
                return ItemError(self._scrub(f"{what}: unexpected answer from Box ({exc.message})"))
        elif isinstance(exc, requests.RequestException):
            f = Failure(status=0, message=exc.__class__.__name__, what=what)
        else:  # pragma: no cover - callers only pass the types above
            return ItemError(self._scrub(f"{what}: {exc.__class__.__name__}"))
        folders = list(folders)
        root_id, root_label = self._root(folders) if f.status == 404 and not f.token_request else (None, None)
        login = self._me.get("login") if self._me else None
        f = Failure(**{**f.__dict__, "root_label": root_label, "root_id": root_id, "service_login": login,
                       "client_id": self._client_id, "config_path": self._config_path})
        err = classify(f)
        if isinstance(err, SetupError) and root_label and login is None:
            login = self._best_effort_login()
            if login:
                err = classify(Failure(**{**f.__dict__, "service_login": login}))
        err.args = (self._scrub(str(err)),)
        return err

    def _best_effort_login(self) -> str | None:
        try:
            return self.whoami().get("login")
        except BoxError:
            return None

    def _call(self, what: str, fn, *args, folders: Iterable[str | None] = (), upload: bool = False, **kw):
        """Run one SDK call: rate limit, translate every failure once."""
        if upload:
            self.limiter.acquire_upload()
        try:
            self._sign_in_once()
            return fn(*args, **kw)
        except BoxError as e:  # raised by our own plumbing (bad key)
            e.args = (self._scrub(str(e)),)
            raise
        except (_Accepted, BoxSDKError, requests.RequestException) as e:
            raise self._translate(e, what, folders) from None

    def _sign_in_once(self) -> None:
        """Get the first token under a lock, so that workers starting together sign in
        once instead of once each."""
        if self._auth.token_storage.get() is not None:
            return
        with self._sign_in_lock:
            if self._auth.token_storage.get() is None:
                self._auth.refresh_token(network_session=self._client.network_session)

    # -- users / items -------------------------------------------------------

    def whoami(self) -> dict:
        me = self._call("sign-in check", self._client.users.get_user_me)
        raw = _raw(me)
        self._me = {"id": str(raw.get("id")), "login": raw.get("login"), "name": raw.get("name")}
        return dict(self._me)

    def get_folder(self, folder_id) -> RemoteItem:
        folder = self._call(f"folder {folder_id}", self._client.folders.get_folder_by_id, str(folder_id),
                            fields=LIST_FIELDS, folders=[folder_id])
        return item_from_json(_raw(folder))

    def get_file(self, file_id) -> RemoteItem:
        f = self._call(f"file {file_id}", self._client.files.get_file_by_id, str(file_id), fields=LIST_FIELDS)
        return item_from_json(_raw(f))

    def list_folder(self, folder_id) -> Iterator[RemoteItem]:
        """Every item of a folder, following `next_marker` (offset paging becomes
        unreliable past 10 000 items)."""
        marker: str | None = None
        while True:
            page = self._call(
                f"listing folder {folder_id}", self._client.folders.get_folder_items, str(folder_id),
                fields=LIST_FIELDS, usemarker=True, marker=marker, limit=self.page_size, folders=[folder_id])
            raw = _raw(page)
            for entry in raw.get("entries") or []:
                if entry.get("type") in ("file", "folder"):
                    yield item_from_json(entry)
            marker = raw.get("next_marker") or None
            if not marker:
                return

    def create_folder(self, parent_id, name) -> RemoteItem:
        """Create, or return the folder of that name that already exists (409)."""
        try:
            folder = self._call(f"creating folder {name!r} in {parent_id}", self._client.folders.create_folder,
                                name, CreateFolderParent(id=str(parent_id)), fields=LIST_FIELDS,
                                folders=[parent_id])
        except NameConflictError as e:
            if e.conflict_type in (None, "folder") and e.conflict_id:
                return self.get_folder(e.conflict_id)
            raise
        return item_from_json(_raw(folder))

    def preflight(self, parent_id, name, size) -> None:
        self._call(f"preflight of {name!r} in folder {parent_id}",
                   self._client.uploads.preflight_file_upload_check,
                   name=name, size=int(size), parent=PreflightFileUploadCheckParent(id=str(parent_id)),
                   folders=[parent_id])

    # -- direct uploads ------------------------------------------------------

    @staticmethod
    def _check_stream(stream) -> None:
        if not (hasattr(stream, "seekable") and stream.seekable()):
            raise ValueError("upload streams must be seekable (the request may be re-sent after a token refresh)")

    @staticmethod
    def _dt(value: str | None):
        return date_time_from_string(value) if value else None

    def _verified(self, files, sha1: str, what: str) -> RemoteItem:
        entries = _raw(files).get("entries") or []
        if not entries:
            raise RetryableError(f"{what}: Box answered without the uploaded file; will retry")
        item = item_from_json(entries[0])
        if item.sha1 is not None and item.sha1.lower() != sha1.lower():
            raise RetryableError(f"{what}: Box stored SHA-1 {item.sha1}, expected {sha1}: the file was "
                                 "corrupted in transit; will retry", code="sha1_mismatch")
        return item

    def upload_file(self, parent_id, name, stream, *, size, sha1, content_modified_at=None) -> RemoteItem:
        self._check_stream(stream)
        what = f"upload of {name!r} to folder {parent_id}"
        files = self._call(
            what, self._client.uploads.upload_file,
            UploadFileAttributes(name=name, parent=UploadFileAttributesParentField(id=str(parent_id)),
                                 content_modified_at=self._dt(content_modified_at)),
            stream, file_file_name=name, content_md_5=sha1, fields=LIST_FIELDS,
            folders=[parent_id], upload=True)
        return self._verified(files, sha1, what)

    def upload_version(self, file_id, stream, *, size, sha1, if_match=None, name=None,
                       content_modified_at=None) -> RemoteItem:
        self._check_stream(stream)
        what = f"new version of file {file_id}"
        files = self._call(
            what, self._client.uploads.upload_file_version, str(file_id),
            UploadFileVersionAttributes(name=name, content_modified_at=self._dt(content_modified_at)),
            stream, file_file_name=name or "file", if_match=if_match, content_md_5=sha1,
            fields=LIST_FIELDS, upload=True)
        return self._verified(files, sha1, what)

    # -- chunked uploads -----------------------------------------------------

    @staticmethod
    def _session(obj) -> UploadSession:
        raw = _raw(obj)
        return UploadSession(id=str(raw["id"]), part_size=int(raw["part_size"]),
                             total_parts=int(raw["total_parts"]),
                             expires_at=raw.get("session_expires_at"))

    def create_upload_session(self, parent_id, name, size) -> UploadSession:
        s = self._call(f"upload session for {name!r} in folder {parent_id}",
                       self._client.chunked_uploads.create_file_upload_session,
                       str(parent_id), int(size), name, folders=[parent_id], upload=True)
        return self._session(s)

    def create_version_session(self, file_id, size, name=None) -> UploadSession:
        s = self._call(f"upload session for a new version of file {file_id}",
                       self._client.chunked_uploads.create_file_upload_session_for_existing_file,
                       str(file_id), int(size), file_name=name, upload=True)
        return self._session(s)

    @staticmethod
    def _part(raw: Mapping[str, Any]) -> UploadedPart:
        return UploadedPart(part_id=str(raw.get("part_id")), offset=int(raw.get("offset") or 0),
                            size=int(raw.get("size") or 0), sha1=raw.get("sha1"))

    def upload_part(self, session_id, data: bytes, offset: int, total_size: int) -> UploadedPart:
        data = bytes(data)
        digest = hashlib.sha1(data).hexdigest()
        end = offset + len(data) - 1
        what = f"part {offset}-{end} of upload session {session_id}"
        try:
            res = self._call(what, self._client.chunked_uploads.upload_file_part, str(session_id),
                             io.BytesIO(data), f"sha={sha1_b64(digest)}", f"bytes {offset}-{end}/{total_size}")
        except PreconditionFailedError as e:
            # the Digest we computed from these very bytes did not match what Box got
            raise RetryableError(f"{what}: Box received different bytes than were sent (corrupted "
                                 "in transit); will retry", status=412, code=e.code,
                                 request_id=e.request_id) from None
        raw = _raw(res)
        part = self._part(raw.get("part") or {})
        if part.sha1 is not None and part.sha1.lower() != digest:
            raise RetryableError(f"{what}: Box stored SHA-1 {part.sha1}, expected {digest}: corrupted "
                                 "in transit; will retry", code="sha1_mismatch")
        return UploadedPart(part.part_id, part.offset, part.size, part.sha1 or digest)

    def list_parts(self, session_id) -> list[UploadedPart]:
        parts: list[UploadedPart] = []
        offset = 0
        while True:
            page = self._call(f"listing parts of upload session {session_id}",
                              self._client.chunked_uploads.get_file_upload_session_parts,
                              str(session_id), offset=offset, limit=1000)
            raw = _raw(page)
            entries = raw.get("entries") or []
            parts.extend(self._part(e) for e in entries)
            total = raw.get("total_count")
            offset += len(entries)
            if not entries or total is None or offset >= int(total):
                return sorted(parts, key=lambda p: p.offset)

    def commit_session(self, session_id, parts, *, sha1, name=None, parent_id=None,
                       if_match=None, content_modified_at=None) -> RemoteItem:
        """Commit; a 202 (Box still assembling) becomes RetryableError(retry_after)."""
        what = f"commit of upload session {session_id}"
        body_parts = [UploadPart(part_id=p.part_id, offset=p.offset, size=p.size, sha_1=p.sha1)
                      for p in sorted(parts, key=lambda p: p.offset)]
        # Name and parent were fixed when the session was created; Box's commit also
        # takes `attributes` (content_modified_at, or a rename), which the SDK's commit
        # method cannot send, so those go through the SDK's generic request.
        attrs: dict[str, Any] = {}
        if name is not None:
            attrs["name"] = name
        if content_modified_at is not None:
            attrs["content_modified_at"] = content_modified_at
        digest = f"sha={sha1_b64(sha1)}"
        if attrs:
            url = (f"{self._client.network_session.base_urls.upload_url}"
                   f"/2.0/files/upload_sessions/{session_id}/commit")
            headers = {"digest": digest}
            if if_match:
                headers["if-match"] = if_match
            opts = FetchOptions(url=url, method="POST", headers=headers,
                                data={"parts": [p.to_dict() for p in body_parts], "attributes": attrs},
                                content_type="application/json", response_format=ResponseFormat.JSON)
            resp = self._call(what, self._client.make_request, opts, folders=[parent_id])
            res = {"entries": (resp.data or {}).get("entries") or []}
        else:
            res = self._call(what, self._client.chunked_uploads.create_file_upload_session_commit,
                             str(session_id), body_parts, digest, if_match=if_match, folders=[parent_id])
        if res is None:  # the SDK maps 202 to None when Retry-After is absent
            raise RetryableError(f"{what}: Box is still assembling the file; will retry", status=202)
        entries = (res if isinstance(res, dict) else _raw(res)).get("entries") or []
        if not entries:
            raise RetryableError(f"{what}: Box answered without the file; will retry")
        item = item_from_json(entries[0])
        if item.sha1 is not None and item.sha1.lower() != sha1.lower():
            raise RetryableError(f"{what}: Box assembled SHA-1 {item.sha1}, expected {sha1}: corrupted "
                                 "in transit; will retry", code="sha1_mismatch")
        return item

    def abort_session(self, session_id) -> None:
        try:
            self._call(f"aborting upload session {session_id}",
                       self._client.chunked_uploads.delete_file_upload_session_by_id, str(session_id))
        except (NotFoundError, SessionExpiredError):
            return  # already gone is what we wanted

    # -- downloads -----------------------------------------------------------

    def download(self, file_id, *, version_id=None, chunk_size=1 << 20) -> Iterator[bytes]:
        """Stream a file's content.  Yields chunks of up to `chunk_size` bytes; a
        network failure mid-body becomes RetryableError."""
        what = f"download of file {file_id}"
        stream = self._call(what, self._client.downloads.download_file, str(file_id),
                            version=str(version_id) if version_id else None)
        response = getattr(self._transport.local, "last_response", None)
        if stream is None:
            raise RetryableError(f"{what}: Box is not ready to serve the file yet; will retry", status=202)
        try:
            if response is not None and not response.raw.closed and response.raw.tell() == 0:
                yield from response.iter_content(chunk_size=chunk_size)
            else:  # pragma: no cover - fall back to the SDK's small-buffer stream
                while True:
                    buf = stream.read(1024)
                    if not buf:
                        break
                    yield buf
        except (requests.RequestException, OSError) as e:
            raise RetryableError(f"{what}: the connection broke mid-download "
                                 f"({e.__class__.__name__}); will retry") from None
        finally:
            if response is not None:
                response.close()

    # -- moves -----------------------------------------------------------------

    def move_file(self, file_id, new_parent_id, name=None) -> RemoteItem:
        f = self._call(f"moving file {file_id} to folder {new_parent_id}",
                       self._client.files.update_file_by_id, str(file_id), name=name,
                       parent=UpdateFileByIdParent(id=str(new_parent_id)), fields=LIST_FIELDS,
                       folders=[new_parent_id])
        return item_from_json(_raw(f))

    def trash_file(self, file_id) -> None:
        self._call(f"trashing file {file_id}", self._client.files.delete_file_by_id, str(file_id))

    # -- events ------------------------------------------------------------------

    def event_stream_now(self) -> str:
        ev = self._call("reading the event stream position", self._client.events.get_events,
                        stream_position="now")
        return str(_raw(ev).get("next_stream_position"))

    def get_events(self, stream_position, limit=500) -> tuple[list[BoxEvent], str]:
        limit = max(1, min(int(limit), EVENTS_MAX))
        ev = self._call("reading events", self._client.events.get_events,
                        stream_position=str(stream_position), limit=limit)
        raw = _raw(ev)
        events = [event_from_json(e) for e in raw.get("entries") or [] if isinstance(e, Mapping)]
        return events, str(raw.get("next_stream_position") or stream_position)

    def long_poll_info(self) -> tuple[str, float]:
        info = self._call("asking for the long-poll server", self._client.events.get_events_with_long_polling)
        for entry in _raw(info).get("entries") or []:
            if entry.get("type") == "realtime_server" and entry.get("url"):
                return str(entry["url"]), float(entry.get("retry_timeout") or 610)
        raise RetryableError("Box offered no long-poll server; will poll instead")

    def long_poll(self, url, stream_position, timeout) -> str:
        """Wait on Box's realtime server (not an API call: no token, no rate limit).

        Waits up to `timeout` + a margin, so pass `retry_timeout` from
        `long_poll_info`; returns "new_change", "reconnect" or "timeout"."""
        self._transport.bump()
        try:
            resp = self._transport.requests_session.get(
                url, params={"stream_position": str(stream_position)},
                timeout=(self._connect_timeout, float(timeout) + self.long_poll_margin))
        except requests.Timeout:
            return "timeout"
        except requests.RequestException as e:
            raise RetryableError(f"long-poll: Box's realtime server could not be reached "
                                 f"({e.__class__.__name__}); will retry") from None
        try:
            if resp.status_code >= 400:
                return "reconnect"
            try:
                message = resp.json().get("message")
            except ValueError:
                return "reconnect"
            return "new_change" if message == "new_change" else "reconnect"
        finally:
            resp.close()

    # -- webhooks (V2) -----------------------------------------------------------

    def list_webhooks(self) -> list[RemoteWebhook]:
        """The app user's webhooks (Box lists those on items the caller owns or sees)."""
        out: list[RemoteWebhook] = []
        marker = None
        while True:
            page = _raw(self._call("listing webhooks", self._client.webhooks.get_webhooks,
                                   marker=marker, limit=1000))
            out.extend(webhook_from_json(w) for w in page.get("entries") or [] if isinstance(w, Mapping))
            marker = page.get("next_marker")
            if not marker:
                return out

    def create_webhook(self, folder_id, address: str, triggers: Iterable[str]) -> RemoteWebhook:
        """A V2 webhook on a folder; Box allows one per folder and app user (409 otherwise)."""
        w = self._call(f"creating a webhook on folder {folder_id}", self._client.webhooks.create_webhook,
                       CreateWebhookTarget(id=str(folder_id), type=CreateWebhookTargetTypeField.FOLDER),
                       address, [CreateWebhookTriggers(t) for t in triggers], folders=[folder_id])
        return webhook_from_json(_raw(w))

    def update_webhook(self, webhook_id, *, address: str | None = None,
                       triggers: Iterable[str] | None = None) -> RemoteWebhook:
        w = self._call(f"updating webhook {webhook_id}", self._client.webhooks.update_webhook_by_id,
                       str(webhook_id), address=address,
                       triggers=None if triggers is None else [UpdateWebhookByIdTriggers(t) for t in triggers])
        return webhook_from_json(_raw(w))

    def delete_webhook(self, webhook_id) -> None:
        self._call(f"deleting webhook {webhook_id}", self._client.webhooks.delete_webhook_by_id, str(webhook_id))

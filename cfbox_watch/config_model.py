"""The validated configuration as frozen plain values.

Everything past `config.load_config` works on these values only, never on raw YAML,
so that the engines and planners can be tested with hand-built configs.
Durations are float seconds, sizes are int bytes, paths are absolute `Path`s.

A post_production entry has up to two halves: `outgoing -> upload_folder_id`
(an OutgoingMapping) and `download_folder_id -> incoming` (an IncomingMapping), both
carrying the entry's `name`.  A delivery entry has only an outgoing half.  State rows
are keyed by (mapping name, direction), so the halves never collide.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

WatchMode = Literal["auto", "inotify", "poll"]
OnConflict = Literal["version", "rename", "skip"]
AfterUpload = Literal["keep", "move", "delete"]
AfterDownload = Literal["keep", "trash", "move"]
OnLocalChange = Literal["keep_both", "skip", "overwrite"]
MatchMode = Literal["filename", "filename+folder"]

DEFAULT_EXCLUDE: tuple[str, ...] = (
    ".*",            # hidden files and folders (.DS_Store, ._AppleDouble, .~lock)
    "*.tmp",
    "*.temp",
    "*.part",
    "*.partial",
    "*.crdownload",
    "~$*",           # Office / Adobe lock files
    "~*.tmp",
    "Thumbs.db",
    "desktop.ini",
    "*.cfbox-tmp",   # our own download temporaries
    "*.cos",         # Capture One settings sidecars being written
    "*.comask",
    "CaptureOne",    # Capture One session cache folders
    "*.psb.tmp",
    "Photoshop Temp*",  # Photoshop scratch files
    "*.$$$",
)


@dataclass(frozen=True)
class WebhookSettings:
    """Box V2 webhooks for a connection (docs/webhooks.md): Box POSTs to `public_url`
    (HTTPS at the studio's reverse proxy), which forwards to `listen_host:listen_port`."""

    public_url: str
    listen_host: str
    listen_port: int


@dataclass(frozen=True)
class Connection:
    """One Box Custom App (one Dev Console config.json)."""

    name: str
    jwt_config: Path
    base_url: str | None = None        # box_sdk_gen BaseUrls.base_url
    upload_url: str | None = None      # box_sdk_gen BaseUrls.upload_url
    api_calls_per_minute: int = 900    # client-side limiter, under Box's ~1000/min per user
    uploads_per_minute: int = 200      # under Box's 240 uploads/min per user
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    webhooks: WebhookSettings | None = None


@dataclass(frozen=True)
class OutgoingMapping:
    """A watched local folder mirrored to a Box folder."""

    name: str                      # the post_production / delivery entry's name
    kind: Literal["post_production", "delivery", "rejection"]   # rejection: the third half
                                   # of a post_production entry (`rejected` -> rejection_folder_id),
                                   # named "<entry>/rejection" so its state rows never collide
    connection: str
    local: Path                    # outgoing (post_production) or source (delivery)
    folder_id: str                 # upload_folder_id (post_production) or folder_id (delivery)
    key_path: str                  # e.g. "post_production[0]", for messages
    settle_time: float = 3.0
    rescan_interval: float = 600.0
    watch: WatchMode = "auto"
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE
    on_conflict: OnConflict = "version"
    after_upload: AfterUpload = "keep"
    sent_dir: Path | None = None   # required when after_upload == "move"
    workers: int = 4
    chunked_threshold: int = 50 * 1024 * 1024
    part_workers: int = 3
    check_images: bool = True


@dataclass(frozen=True)
class IncomingMapping:
    """A Box Download folder pulled into a local folder."""

    name: str
    connection: str
    folder_id: str                 # download_folder_id
    local: Path                    # incoming
    key_path: str
    poll_interval: float = 60.0
    long_poll: bool = True
    after_download: AfterDownload = "keep"
    archive_folder_id: str | None = None   # required when after_download == "move"
    on_local_change: OnLocalChange = "keep_both"
    file_mode: int = 0o664
    dir_mode: int = 0o2775
    group: str | None = None
    workers: int = 4
    accept: tuple[str, ...] = ("*",)       # returns not matching are never downloaded
    invalid_folder_id: str | None = None   # where non-accepted returns are moved on Box


@dataclass(frozen=True)
class CompletionLog:
    """Creative Force style `<batch>_transfer_completed.log` (docs/creative-force.md)."""

    quiet: float = 300.0
    name: str = "{batch}_transfer_completed.log"


@dataclass(frozen=True)
class CreativeForce:
    """Per post_production entry: completion logs and round-trip tracking, run by the
    `<entry>:cf` Side (cfbox_watch/creative_force/engine.py) over the halves' state."""

    name: str                                  # the entry's name
    connection: str
    key_path: str
    outgoing: OutgoingMapping | None = None    # the main outgoing half
    rejection: OutgoingMapping | None = None   # the rejection half
    incoming: IncomingMapping | None = None
    completion_log: CompletionLog | None = None
    match: MatchMode = "filename"
    return_due: float | None = None


@dataclass(frozen=True)
class Config:
    path: Path                     # the YAML file it was loaded from
    state_dir: Path
    connections: dict[str, Connection]
    outgoing: tuple[OutgoingMapping, ...] = ()
    incoming: tuple[IncomingMapping, ...] = ()
    creative_force: tuple[CreativeForce, ...] = ()
    settle_time: float = 3.0
    poll_interval: float = 60.0
    workers: int = 4
    log_level: str = "info"
    shutdown_grace: float = 20.0   # seconds in-flight transfers get on SIGTERM
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def mapping_names(self) -> list[str]:
        seen: list[str] = []
        for m in (*self.outgoing, *self.incoming):
            if m.name not in seen:
                seen.append(m.name)
        return seen

"""Command line: parses arguments, dispatches, and is the one place that maps
exceptions to messages and exit codes (no traceback for anything a user can fix)."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from cfbox_watch import __version__
from cfbox_watch.errors import EX_SOFTWARE, CfboxError, ConfigError

DEFAULT_CONFIG = "/etc/cfbox/cfbox.yaml"

# command -> (module, function); each function takes the argparse Namespace and
# returns an exit code.  Imported lazily so `cfbox-watch emulator` does not pay for
# watchdog and `status` stays fast.
COMMANDS = {
    "run": ("cfbox_watch.daemon", "cmd_run"),
    "once": ("cfbox_watch.daemon", "cmd_once"),
    "check": ("cfbox_watch.check", "cmd_check"),
    "status": ("cfbox_watch.status", "cmd_status"),
    "retry": ("cfbox_watch.status", "cmd_retry"),
    "emulator": ("cfbox_watch.emulator.cli", "cmd_emulator"),
    "demo": ("cfbox_watch.demo", "cmd_demo"),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cfbox-watch",
        description="Move studio assets between local folders and Box.com.",
    )
    p.add_argument("--version", action="version", version=f"cfbox-watch {__version__}")
    p.add_argument(
        "-c", "--config",
        default=os.environ.get("CFBOX_CONFIG", DEFAULT_CONFIG),
        help=f"YAML configuration file (default: $CFBOX_CONFIG or {DEFAULT_CONFIG})",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    sub.add_parser("run", help="run the daemon in the foreground (systemd's ExecStart)")
    sub.add_parser("once", help="one full pass in both directions, then exit (0 when all succeeded)")

    c = sub.add_parser("check", help="validate the configuration and the Box set-up")
    c.add_argument("--offline", action="store_true", help="only validate files; make no Box calls")

    s = sub.add_parser("status", help="show queues, failures and last successes per mapping")
    s.add_argument("--json", action="store_true", help="machine-readable output")

    r = sub.add_parser("retry", help="requeue failed items")
    r.add_argument("--mapping", help="only this mapping")
    r.add_argument("paths", nargs="*", help="only these relative paths")

    e = sub.add_parser("emulator", help="run the local Box emulator (no Box account needed)")
    e.add_argument("--host", default="127.0.0.1")
    e.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    e.add_argument("--data", default="./emulator-data", help="folder that keeps the emulator's state")
    e.add_argument("--write-config", metavar="FILE",
                   help="write a Dev-Console-shaped config.json for the emulator's app here")
    e.add_argument("--token-ttl", type=float, default=3600.0, help="access token lifetime, seconds")
    e.add_argument("--part-size", type=int, default=None,
                   help="chunked upload part size in bytes (tests use small parts)")
    e.add_argument("--chunk-min", type=int, default=None,
                   help="smallest file size allowed for an upload session (Box: 20000000)")
    e.add_argument("--file-size-limit", type=int, default=None,
                   help="plan's largest file in bytes (uploads above it get 403; default 5 GB, Business)")
    e.add_argument("--longpoll-hold", type=float, default=None,
                   help="seconds a long-poll request waits for a change before 'reconnect' (default 30)")

    d = sub.add_parser("demo", help="emulator + daemon in a scratch folder, files moving both ways")
    d.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    d.add_argument("--dir", default=None, help="scratch folder (default: a new temporary one)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module_name, func_name = COMMANDS[args.command]
    try:
        func = getattr(importlib.import_module(module_name), func_name)
        return int(func(args) or 0)
    except ConfigError as e:
        for line in e.problems:
            print(f"cfbox-watch: {line}", file=sys.stderr)
        return e.exit_code
    except CfboxError as e:
        print(f"cfbox-watch: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception:  # a bug: keep the traceback, it is what a developer needs
        import traceback

        traceback.print_exc()
        print("cfbox-watch: internal error (a bug); please report the traceback above",
              file=sys.stderr)
        return EX_SOFTWARE


if __name__ == "__main__":
    sys.exit(main())

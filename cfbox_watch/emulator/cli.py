"""`cfbox-watch emulator`: start the emulator, print one JSON ready line, serve until
SIGTERM/SIGINT."""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path

from cfbox_watch.emulator import provision
from cfbox_watch.emulator.app import Emulator
from cfbox_watch.emulator.server import EmulatorServer
from cfbox_watch.emulator.store import Store
from cfbox_watch.errors import UserError


def cmd_emulator(args) -> int:
    data = Path(args.data)
    try:
        data.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"emulator: cannot create --data folder {data}: {e.strerror}") from None
    store = Store(data)
    provision.provision(store)
    if args.write_config:
        provision.write_config(store, args.write_config)
    app = Emulator(store, token_ttl=args.token_ttl, part_size=args.part_size, chunk_min=args.chunk_min,
                   longpoll_hold=getattr(args, "longpoll_hold", None),
                   file_size_limit=getattr(args, "file_size_limit", None))
    try:
        server = EmulatorServer((args.host, args.port), app, verbose=bool(getattr(args, "verbose", False)))
    except OSError as e:
        raise UserError(f"emulator: cannot listen on {args.host}:{args.port}: {e.strerror}") from None
    host, port = server.server_address[:2]
    base = f"http://{host}:{port}"

    def stop(*_):
        app.stopping = True
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)  # before the ready line: a fast stop is still clean
    sa = store.user(store.meta("service_account_id"))
    print(json.dumps({"event": "ready", "base_url": base, "upload_url": f"{base}/api",
                      "config": str(Path(args.write_config).resolve()) if args.write_config else None,
                      "folders": provision.folders(store),
                      "service_account": {"id": sa["id"], "login": sa["login"], "name": sa["name"]}}),
          flush=True)
    _print_guide(base, args.write_config, provision.folders(store))

    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        # The store stays open: request threads may still be finishing, and SQLite (WAL)
        # is consistent whenever the process ends, which is what restart tests rely on.
        server.server_close()
    return 0


def _print_guide(base: str, config_path: str | None, folders: dict) -> None:
    """A newcomer who starts the emulator by hand needs to know what to put in cfbox.yaml;
    the JSON line above is for programs, this is for people (stderr, so tests ignore it)."""
    jwt = str(Path(config_path).resolve()) if config_path else "<run with --write-config FILE>"
    print(f"""
Box emulator listening on {base} (Ctrl-C stops it; its data stays in place).
A cfbox.yaml that uses it:

  state_dir: ./state
  connections:
    emulator:
      jwt_config: {jwt}
      base_url: {base}
      upload_url: {base}/api
  post_production:
    - name: acme-retouch
      connection: emulator
      outgoing: ./studio/outgoing/acme
      upload_folder_id: "{folders.get('upload')}"
      download_folder_id: "{folders.get('download')}"
      incoming: ./studio/incoming/acme
  delivery:
    - name: brand-final
      connection: emulator
      source: ./studio/final/brand
      folder_id: "{folders.get('delivery')}"

The daemon never creates the studio's own folders (a missing one may be an unmounted
share); make them first:
  mkdir -p studio/outgoing/acme studio/incoming/acme studio/final/brand

Act as the vendor (put a file into the Download folder):
  python -c "from cfbox_watch.emulator.control import EmulatorControl as E; \\
E('{base}').vendor_upload('{folders.get('download')}', 'retouched.jpg', b'data')"
""", file=sys.stderr, flush=True)

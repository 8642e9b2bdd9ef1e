"""`python -m cfbox_watch.bench [--full|--smoke] [--only NAME,...] [--profile] [--out DIR]`."""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from cfbox_watch.bench import report, scenarios
from cfbox_watch.bench.profile import find_pyspy
from cfbox_watch.bench.sizes import MODES, with_overrides


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cfbox_watch.bench",
                                description="Measure cfbox-watch against ceilings taken in the same run "
                                            "(emulator in a subprocess; see docs/benchmarks.md).")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--full", action="store_const", const="full", dest="mode",
                      help="the sizes of issue 7 (2,000 files, 1 GiB, 100,000-file restart; an hour or more)")
    size.add_argument("--smoke", action="store_const", const="smoke", dest="mode",
                      help="tiny sizes: proves the harness works (seconds), figures mean nothing")
    p.set_defaults(mode="quick")
    p.add_argument("--only", default=",".join(scenarios.ALL),
                   help=f"comma-separated subset of: {', '.join(scenarios.ALL)}")
    p.add_argument("--profile", action="store_true",
                   help="also profile the daemon on small/big files out and in with py-spy (pip install py-spy)")
    p.add_argument("--set", action="append", default=[], metavar="SIZE=N",
                   help="override one size of the mode, e.g. --set restart_files=10000 (see sizes.py)")
    p.add_argument("--out", default="bench-results", help="folder for the JSON and Markdown results")
    p.add_argument("--work", default=None, help="scratch folder (default: a new one under /tmp, removed after)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    only = tuple(x.strip() for x in args.only.split(",") if x.strip())
    unknown = [x for x in only if x not in scenarios.ALL]
    if unknown:
        print(f"bench: unknown --only name(s) {', '.join(unknown)}; choose from {', '.join(scenarios.ALL)}",
              file=sys.stderr)
        return 2
    if args.profile and not find_pyspy():
        print("bench: --profile needs py-spy: .venv/bin/pip install py-spy (it is not a runtime dependency)",
              file=sys.stderr)
        return 2
    try:
        sizes = with_overrides(MODES[args.mode], args.set)
    except ValueError as e:
        print(f"bench: --set: {e}", file=sys.stderr)
        return 2

    def on_term(signum, frame):   # a killed run still removes its scratch data and servers
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="cfbox-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    result = {"mode": sizes.mode, "command": report.command_line(argv), "machine": report.machine(),
              "sizes": sizes.__dict__}
    bench = scenarios.Bench(sizes, work, log=lambda line: print(line, flush=True))
    t0 = time.monotonic()
    failed = None
    try:
        scenarios.run(bench, only)
        if args.profile:
            from cfbox_watch.bench.profile import profile_runs

            result["profile"] = profile_runs(bench)
    except KeyboardInterrupt:
        failed = "interrupted"
    except RuntimeError as e:
        failed = str(e)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    result.update(seconds=time.monotonic() - t0, rows=[r.as_dict() for r in bench.rows],
                  details=bench.details, failed=failed)
    print()
    print(report.text_table(result["rows"]))
    j, md = report.write(result, Path(args.out))
    print(f"\nwrote {j} and {md} ({result['seconds']:.0f} s)")
    if failed:
        print(f"bench: stopped early: {failed}", file=sys.stderr)
        return 1
    return 0

"""Machine facts, the printed table, and the JSON + Markdown result files.

The files carry the machine (cores, memory, Python, load) and the exact command, because
a figure from a shared 2-core VM and one from a studio server are not comparable."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path


def machine() -> dict:
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).resolve().parents[2], timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    try:
        load = os.getloadavg()
    except OSError:
        load = (0.0, 0.0, 0.0)
    return {"cores": os.cpu_count(), "memory_gib": round(mem_kb / 1024 / 1024, 1),
            "python": platform.python_version(), "platform": platform.platform(),
            "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "loadavg_at_start": [round(x, 2) for x in load], "git_commit": commit}


def command_line(argv: list[str] | None = None) -> str:
    argv = sys.argv[1:] if argv is None else argv
    return " ".join(["python -m cfbox_watch.bench", *map(shlex.quote, argv)])


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 10 else f"{v:,.1f}".rstrip("0").rstrip(".")
    return f"{v:,}" if isinstance(v, int) else str(v)


def table_rows(rows: list[dict]) -> list[list[str]]:
    out = [["#", "Measure", "Value", "Unit", "Ceiling / goal", "Ratio", "Ceiling is"]]
    for r in rows:
        out.append([r["group"], r["measure"], _fmt(r["value"]), r["unit"], _fmt(r["ceiling"]),
                    "-" if r["ratio"] is None else f"{r['ratio']:.2f}", r["ceiling_label"]])
    return out


def text_table(rows: list[dict]) -> str:
    t = table_rows(rows)
    widths = [max(len(line[i]) for line in t) for i in range(len(t[0]))]
    lines = []
    for n, line in enumerate(t):
        lines.append("  ".join(c.ljust(w) if i in (1, 3, 6) else c.rjust(w) for i, (c, w) in
                               enumerate(zip(line, widths))).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown(result: dict) -> str:
    m = result["machine"]
    t = table_rows(result["rows"])
    md = [f"## Benchmark results ({result['mode']})", "",
          f"- Command: `{result['command']}`",
          f"- Date: {m['date_utc']}, commit {m['git_commit'] or '?'}, took {result['seconds']:.0f} s",
          f"- Machine: {m['cores']} cores, {m['memory_gib']} GiB memory, Python {m['python']}, "
          f"{m['platform']}, load average at start {m['loadavg_at_start']}", "",
          "| " + " | ".join(t[0]) + " |", "|" + "---|" * len(t[0])]
    md += ["| " + " | ".join(c.replace("|", "\\|") for c in line) + " |" for line in t[1:]]
    notes = [(r["measure"], r["note"]) for r in result["rows"] if r.get("note")]
    if notes:
        md += ["", "Notes:", ""] + [f"- {k}: {v}" for k, v in notes]
    if result.get("profile"):
        md += ["", "### Profile", "", "```", result["profile"].rstrip(), "```"]
    return "\n".join(md) + "\n"


def write(result: dict, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    base = out / f"bench-{result['mode']}-{stamp}"
    j, md = base.with_suffix(".json"), base.with_suffix(".md")
    j.write_text(json.dumps(result, indent=1, default=str) + "\n")
    md.write_text(markdown(result))
    for latest, src in ((out / f"latest-{result['mode']}.json", j), (out / f"latest-{result['mode']}.md", md)):
        latest.write_text(src.read_text())
    return j, md

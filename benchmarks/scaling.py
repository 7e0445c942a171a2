"""Shared by the scaling benchmarks: each measurement runs in a fresh child process, which reports
one JSON line; the parent collects the rows and writes them as JSON + Markdown."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable


def status_kib(field: str) -> int:
    """A /proc/self/status field in KiB: VmRSS (resident now) or VmHWM (peak resident)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def run_child(command: list[str], label: str, env: dict[str, str] | None = None) -> dict[str, Any] | None:
    """Run a measurement in a fresh process; its last stdout line is a JSON row (None if it failed)."""
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        print(f"{label}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_results(out: Path, name: str, rows: list[dict[str, Any]], markdown: Callable[[list[dict]], str]) -> None:
    """`<out>/<name>.json` and `<out>/<name>.md`; the Markdown is printed too."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(rows, indent=2) + "\n")
    (out / f"{name}.md").write_text(markdown(rows))
    print((out / f"{name}.md").read_text())

"""Starting data-parallel runs: whether torchrun started this process, and re-launching under it
(environment variables and a subprocess only: no torch, so the CLI checks a recipe first)."""

from __future__ import annotations

import os
import subprocess
import sys


def launched() -> bool:
    """Whether this process was started by torchrun as one of several workers."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def relaunch(args: list[str], nproc: int) -> int:
    """Run `python -m compress <args>` in `nproc` processes on this machine with torchrun; its exit code."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
        "-m", "compress", *args,
    ]
    return subprocess.call(command)


def without_option(argv: list[str], option: str) -> list[str]:
    """`argv` without `option VALUE` / `option=VALUE` (the relaunched command must not relaunch)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            out.append(arg)
    return out

"""Test-only fault injection: kill this process at a named point, to test that runs resume.

`COMPRESS_TEST_KILL_AT=<point>[@<n>]` sends SIGKILL to this process the n-th time (default: the
first) it reaches `<point>`. Points, passed by `atomic_write`: `write:<file name>` (the temp file
is written, not yet renamed into place) and `wrote:<file name>` (renamed). E.g.
`wrote:checkpoint.pt@2` dies right after the second epoch checkpoint. Unset, it costs one
environment lookup per atomic write. Used by tests/test_kill_resume.py.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

KILL_ENV = "COMPRESS_TEST_KILL_AT"
_reached: Counter[str] = Counter()


def kill_point(name: str) -> None:
    """SIGKILL this process if `COMPRESS_TEST_KILL_AT` names `name` and this is its n-th visit."""
    wanted = os.environ.get(KILL_ENV)
    if not wanted:
        return
    point, _, nth = wanted.partition("@")
    if point != name:
        return
    _reached[name] += 1
    if _reached[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)

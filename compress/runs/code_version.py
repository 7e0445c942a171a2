"""What version of the code a stage ran: a fingerprint of the package's source files.

A stage's cache id hashes this fingerprint, so after editing a loss, a model or a stage the next
run retrains the stages instead of reusing what the old code wrote. Files that cannot change a
stage's output (the command line, reports, `compress search` and the studies, which only
orchestrate runs through the pipeline and are imported by no stage) are left out: editing them
keeps the cache.
The fingerprint is computed once per process (about 80 small files).
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]  # the `compress` folder
NOT_RESULTS = frozenset({"cli.py", "__main__.py", "report", "search", "studies"})  # top-level names that never change a stage's output


def source_fingerprint(root: Path) -> str:
    """A short hash of every `.py` file under `root` (path and bytes), except NOT_RESULTS."""
    digest = hashlib.sha256()
    for path in sorted(Path(root).rglob("*.py")):
        relative = path.relative_to(root)
        if relative.parts[0] in NOT_RESULTS:
            continue
        content = path.read_bytes()
        digest.update(f"{relative.as_posix()}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()[:16]


@functools.cache
def code_fingerprint() -> str:
    """The fingerprint of the installed `compress` package's source (cached for the process)."""
    return source_fingerprint(PACKAGE)

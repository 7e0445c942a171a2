"""A full disk or an out-of-memory inside a stage: one clear message, earlier stages untouched.

Stages write only into their own folder, and a folder counts as finished only once its
`stage.json` is written, so a stage that fails half-way leaves finished stages as they were and
is redone (resumed from its last epoch checkpoint) by the next run.
"""

from __future__ import annotations

import errno
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from compress.errors import ResourceError

if TYPE_CHECKING:
    import torch

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
RERUN = "then rerun the same command: finished stages are kept and training resumes from its last checkpoint"


@contextmanager
def resource_errors(what: str, folder: Path, device: torch.device | None = None) -> Iterator[None]:
    """Turn ENOSPC / EDQUOT, MemoryError and torch out-of-memory raised in the block into a ResourceError.

    `what` names the failing step (e.g. "stage 02-distill"); `folder` is where it was writing.
    """
    try:
        yield
    except OSError as exc:
        if exc.errno not in DISK_FULL:
            raise
        target = exc.filename or folder
        raise ResourceError(
            f"{what} failed: no space left on the device writing {target} ({exc.strerror})",
            f"free disk space on that device (or set output_dir to another disk), {RERUN}",
        ) from exc
    except MemoryError as exc:
        raise _out_of_memory(what, device, exc) from exc
    except RuntimeError as exc:  # torch.OutOfMemoryError is one
        if not _torch_out_of_memory(exc):
            raise
        raise _out_of_memory(what, device, exc) from exc


def _torch_out_of_memory(exc: RuntimeError) -> bool:
    """torch's GPU OOM, or its CPU allocator's (a plain RuntimeError saying so); torch is not imported here."""
    torch = sys.modules.get("torch")
    return (torch is not None and isinstance(exc, torch.OutOfMemoryError)) or "can't allocate memory" in str(exc)


def _out_of_memory(what: str, device: torch.device, exc: BaseException) -> ResourceError:
    where = "GPU" if device is not None and device.type == "cuda" else "CPU"
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ResourceError(
        f"{what} ran out of {where} memory ({detail[:200]})",
        f"lower the stage's batch_size (or eval.batch_size / eval_users), use a smaller model or a device "
        f"with more memory, {RERUN}",
    )

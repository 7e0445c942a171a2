"""Data-parallel runs on torchrun: one process per device, rank 0 the only writer.

A process started by `torchrun` (or `compress run --nproc N`, which re-launches itself under
`torch.distributed.run --standalone`, see launch.py) finds RANK, WORLD_SIZE and LOCAL_RANK in its
environment and joins the process group: gloo on CPU, NCCL on CUDA (one GPU per local rank).
Every rank loads the same data and runs the same recipe loop; training steps are data
parallel (`fit` wraps the model in DistributedDataParallel and gives each rank its share of
every batch); everything that writes a file — stage folders, checkpoints, logs, manifest,
report — happens on rank 0, and the other ranks receive its results by broadcast.
Without those variables (or with WORLD_SIZE=1) every function here is a no-op and a run is
exactly the single-process run.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any, Callable, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from compress.errors import RecipeError
from compress.runtime.launch import launched

T = TypeVar("T")
# Other ranks wait while rank 0 evaluates, benchmarks, exports and quantizes a stage alone.
WAIT_TIMEOUT = timedelta(hours=4)


def active() -> bool:
    """Whether this process is one rank of an initialised multi-process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0, the one process that writes files and logs (always true without torchrun)."""
    return rank() == 0


def setup(device: torch.device) -> torch.device:
    """Join torchrun's process group if launched by it; return this rank's device.

    gloo on CPU; on CUDA one GPU per local rank (`cuda:LOCAL_RANK`), NCCL for its tensors.
    """
    if not launched():
        return device
    if device.type == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if local_rank >= torch.cuda.device_count():
            raise RecipeError(
                f"local rank {local_rank} has no GPU: this machine has {torch.cuda.device_count()}",
                "start at most one process per GPU (--nproc / --nproc-per-node)",
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        # on CUDA: NCCL for the gradients, gloo for the small CPU collectives (metrics, objects)
        backend = "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=WAIT_TIMEOUT)
    return device


def backend() -> str:
    return dist.get_backend() if active() else "none"


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if active():
        dist.barrier()


def broadcast(value: T) -> T:
    """Rank 0's `value` on every rank (any picklable object)."""
    if not active():
        return value
    box = [value if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_main(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call `fn` on rank 0 only; every rank returns its result (the others wait for it)."""
    return broadcast(fn(*args, **kwargs) if is_main() else None)


def mean(value: float) -> float:
    """The mean of a number over all ranks."""
    if not active():
        return value
    total = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(total)
    return float(total.item()) / world_size()


def strided(values: np.ndarray) -> np.ndarray:
    """This rank's share of `values`: every world_size-th one, from its rank on (may be empty)."""
    return values[rank() :: world_size()]


def batch_part(users: np.ndarray) -> np.ndarray:
    """This rank's share of a global training batch (`strided`).

    A batch with fewer users than ranks is topped up from its own start, so that every rank
    steps with a non-empty batch (DDP needs every rank in every step).
    """
    if len(users) < world_size():
        users = np.resize(users, world_size())
    return strided(users)


def gather_in_order(values: np.ndarray, total: int) -> np.ndarray:
    """Undo `strided`: every rank gets all `total` values in their original order."""
    if not active():
        return values
    parts: list[np.ndarray | None] = [None] * world_size()
    dist.all_gather_object(parts, values)
    merged = np.empty(total, dtype=values.dtype)
    for index, part in enumerate(parts):
        merged[index::world_size()] = part
    return merged


def wrap(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """`module` in DistributedDataParallel when several ranks train it, else `module` itself."""
    if not active():
        return module
    from torch.nn.parallel import DistributedDataParallel

    # static_graph: the same parameters take part in every step; the backbone's unused
    # 1-token embedding table is then no error (and needs no find_unused_parameters pass)
    return DistributedDataParallel(
        module, device_ids=[device.index] if device.type == "cuda" else None, static_graph=True
    )

"""The one timing loop and memory probe of the project (stages, studies and benchmark scripts use it).

Inputs are real test-split histories. Two length modes are measured: `fixed` pads every
sequence to the model's max length; `realistic` pads a batch only to its longest history
(batch 1: the history's own length), so it follows the test split's length distribution.
Torch-free at import: torch is imported only where a CUDA device or torch threads are asked for.
"""

from __future__ import annotations

import gc
import os
import resource
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Literal, Sequence, TypeVar, get_args

import numpy as np

from compress.data.padding import left_pad

if TYPE_CHECKING:
    import torch

    from compress.data.sequences import SequenceData

LengthMode = Literal["fixed", "realistic"]
LENGTH_MODES: tuple[LengthMode, ...] = get_args(LengthMode)
Item = TypeVar("Item")

PROCESS_CPU = time.process_time  # every thread of this process: what a call costs on a shared machine
THREAD_CPU = time.thread_time  # the calling thread only: the work itself with one onnxruntime thread


@dataclass
class Timings:
    """Milliseconds per timed call: wall clock, and CPU time by the loop's CPU clock."""

    wall_ms: np.ndarray
    cpu_ms: np.ndarray


def time_calls(
    call: Callable[[Item], Any],
    inputs: Sequence[Item],
    warmup: int,
    cpu_clock: Callable[[], float] = PROCESS_CPU,
    after: Callable[[Item], Any] | None = None,
) -> Timings:
    """Call `call` on every input; time those after the first `warmup` (wall and `cpu_clock`).

    `after(item)`, untimed, follows every call (to roll back state a call changed)."""
    wall, cpu = [], []
    for index, item in enumerate(inputs):
        start, start_cpu = time.perf_counter(), cpu_clock()
        call(item)
        if index >= warmup:
            cpu.append(cpu_clock() - start_cpu)
            wall.append(time.perf_counter() - start)
        if after is not None:
            after(item)
    return Timings(np.asarray(wall) * 1000.0, np.asarray(cpu) * 1000.0)


def test_histories(data: SequenceData, max_len: int, count: int, seed: int) -> list[np.ndarray]:
    """`count` test-split histories (last `max_len` items) of seeded random users."""
    from compress.data.batching import history_and_target

    users = np.random.default_rng(seed).integers(0, data.num_users, size=count)
    return [history_and_target(data, int(u), "test")[0][-max_len:] for u in users]


def make_batch(histories: list[np.ndarray], mode: LengthMode, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Left-padded (item_ids, attention_mask): to `max_len` (fixed) or to the longest history (realistic)."""
    rows = [h[-max_len:] for h in histories]
    length = max_len if mode == "fixed" else max(len(r) for r in rows)
    ids = left_pad(rows, length)
    return ids, (ids > 0).astype(np.int64)


def latency_stats(ms: np.ndarray) -> dict[str, float]:
    """p50/p95/p99/mean of per-call milliseconds."""
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "mean": float(ms.mean())}


def _rss_bytes() -> int:
    """Current resident set size (Linux /proc); elsewhere the process high-water mark."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakMemory:
    """Peak memory while a block runs: process RSS sampled every few ms on CPU, max allocated on CUDA.

    `increase_bytes` (peak minus the level when the block started) is what the model added.
    """

    def __init__(self, device: torch.device, interval_s: float = 0.002) -> None:
        self.device = device
        self.interval_s = interval_s
        self.baseline = self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "PeakMemory":
        gc.collect()
        if self.device.type == "cuda":
            import torch

            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline = torch.cuda.memory_allocated(self.device)
        else:
            self.baseline = self.peak = _rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, _rss_bytes())

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, _rss_bytes())
        else:
            import torch

            self.peak = torch.cuda.max_memory_allocated(self.device)

    def result(self) -> dict[str, Any]:
        kind = "cuda_max_allocated" if self.device.type == "cuda" else "process_rss"
        return {"kind": kind, "peak_bytes": self.peak, "increase_bytes": max(self.peak - self.baseline, 0)}


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Set torch's CPU thread count for a block (None: leave it)."""
    if threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def median_of(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Leaf-wise median of equally shaped nested dicts of numbers."""
    first = results[0]
    if isinstance(first, dict):
        return {key: median_of([r[key] for r in results]) for key in first}
    if isinstance(first, (int, float)) and not isinstance(first, bool):
        middle = float(np.median(results))
        return int(middle) if all(isinstance(r, int) for r in results) and middle.is_integer() else middle
    return first

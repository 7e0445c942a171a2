"""Serving-realistic benchmark of an ONNX artifact with a step model: what one new event costs.

Every request is "user u just interacted with item i; recommend": the history is a test user's
real one (its last max_len items, the new item last). Three ways to answer it, each timed at
batch 1 and at a large batch, through onnxruntime on the same machine in the same process:

    full_padded  the full pass over the history left-padded to max_len (`model.onnx`, what
                 `compress predict` and the stage benchmark run)
    full_real    the full pass at real lengths: batch 1 at the history's own length; large
                 batches sorted by length and cut into buckets, each padded to its longest
    step         the step model (`step.onnx`) through the serving code (OnnxStepModel.advance over
                 a KVStore slot per user: gathering the users' cached keys/values, the graph,
                 writing back the new positions), the cache holding the history before the new
                 item (each call's state changes are rolled back, untimed, before the next call)
    step_graph   the step graph alone on inputs gathered beforehand (what the serving code adds
                 is step minus step_graph)

Reported per mode and batch: p50/p99 ms per call and events/s (batch x calls / total time, and
batch / p50), the median CPU ms of the calling thread per call and events per CPU second (with one
onnxruntime thread, the work itself: steady on a shared machine); the step's ratios to both full passes; the share of computed positions that are padding; cached-state bytes per user
(fp32 keys/values + the window's ids). The states are built before timing (a prefill per
user), as a server holds them in memory. Torch-free.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from compress.bench.timing import THREAD_CPU, time_calls
from compress.data.padding import left_pad
from compress.serve.onnx_model import OnnxRecommender
from compress.serve.kv_store import COUNTERS, KVStore
from compress.serve.step_model import OnnxStepModel

MODES = ("full_padded", "full_real", "step", "step_graph")


def _percentiles(ms: np.ndarray, cpu_ms: np.ndarray) -> dict[str, float]:
    p50, p99 = np.percentile(ms, [50, 99])
    return {"p50_ms": float(p50), "p99_ms": float(p99), "mean_ms": float(np.mean(ms)),
            "cpu_p50_ms": float(np.median(cpu_ms))}


def _prefill(step: OnnxStepModel, histories: list[np.ndarray], chunk: int = 64) -> KVStore:
    """A store whose slot i holds history i but its last item (empty for a one-item history)."""
    store = step.new_store(len(histories))
    for start in range(0, len(histories), chunk):
        todo = [i for i in range(start, min(start + chunk, len(histories))) if len(histories[i]) > 1]
        if todo:
            step.advance(store, todo, [histories[i][:-1] for i in todo])
    return store


def _snapshot(store: KVStore) -> Any:
    """What `advance` changes besides cached positions past `length`: restoring it rolls a call back."""
    saved = [store.items.copy(), *[getattr(store, name).copy() for name in COUNTERS]]

    def restore(slots: np.ndarray) -> None:
        store.items[slots] = saved[0][slots]
        for name, values in zip(COUNTERS, saved[1:]):
            getattr(store, name)[slots] = values[slots]

    return restore


def incremental_bench(
    folder: Path,
    histories: list[np.ndarray],
    batch_sizes: tuple[int, ...] = (1, 256),
    warmup: int = 5,
    iterations: int = 50,
    batch_iterations: int = 5,
    threads: int | None = None,
) -> dict[str, Any]:
    """Measure the three modes (module doc) on `histories` (internal ids, oldest first, new item last).

    Batch 1 times `iterations` requests (after `warmup`); a larger batch size B times
    `batch_iterations` batches of B requests drawn in order from `histories` (after one warm-up).
    """
    full = OnnxRecommender(folder, "cpu", threads=threads)
    step = OnnxStepModel(folder, "cpu", threads=threads)
    max_len = full.max_len
    histories = [np.asarray(h[-max_len:], dtype=np.int64) for h in histories if len(h)]
    lengths = np.array([len(h) for h in histories])
    store = _prefill(step, histories)
    restore = _snapshot(store)

    def run_full(ids: np.ndarray) -> Any:
        return full.topk(ids, (ids > 0).astype(np.int64))

    results: dict[str, Any] = {}
    for batch in batch_sizes:
        calls = (warmup + iterations) if batch == 1 else (1 + batch_iterations)
        warm = warmup if batch == 1 else 1
        picks = [np.arange(i * batch, (i + 1) * batch) % len(histories) for i in range(calls)]
        padded = [left_pad([histories[j] for j in p], max_len) for p in picks]
        buckets = _length_buckets(lengths, batch, calls)
        real = [left_pad([histories[j] for j in b], int(lengths[b].max())) for b in buckets]
        news = [[histories[j][-1:] for j in p] for p in picks]
        feeds = [step.prepare(store, p, n).feeds for p, n in zip(picks, news)]
        entry: dict[str, Any] = {}
        for mode, call, inputs, after in (
            ("full_padded", run_full, padded, None),
            ("full_real", run_full, real, None),
            ("step", lambda k: step.advance(store, picks[k], news[k]), list(range(calls)), lambda k: restore(picks[k])),
            ("step_graph", lambda f: step.session.run(step.run_names, f), feeds, None),
        ):
            timings = time_calls(call, inputs, warm, THREAD_CPU, after)
            stats = _percentiles(timings.wall_ms, timings.cpu_ms)
            entry[mode] = {**stats, "events_per_s": batch * len(timings.wall_ms) / (timings.wall_ms.sum() / 1000.0),
                           "events_per_s_median": batch / (stats["p50_ms"] / 1000.0),
                           "events_per_cpu_s": batch / (stats["cpu_p50_ms"] / 1000.0)}
        real_positions = sum(int(lengths[p].sum()) for p in picks[warm:])
        entry["full_padded"]["padding_share"] = 1 - real_positions / (len(picks[warm:]) * batch * max_len)
        bucket_positions = sum(int(lengths[b].sum()) for b in buckets[warm:])
        entry["full_real"]["padding_share"] = 1 - bucket_positions / sum(int(np.prod(b.shape)) for b in real[warm:])
        for base in ("full_padded", "full_real"):
            for rate, suffix in (("events_per_s", ""), ("events_per_s_median", "_median"), ("events_per_cpu_s", "_cpu")):
                entry["step"][f"speedup_vs_{base}{suffix}"] = entry["step"][rate] / entry[base][rate]
        results[f"batch_{batch}"] = entry
    per_position = int(step.step["state_bytes_per_position"])
    cached = np.minimum(lengths, max_len)
    return {
        "max_len": max_len,
        "requests": len(histories),
        "mean_history": float(lengths.mean()),
        "threads": threads,
        "state_bytes_per_user": {
            "fp32_mean": float((cached * (per_position + 8)).mean() + 8 * len(COUNTERS)),
            "fp32_at_max_len": store.slot_bytes,
            "per_position": per_position,
        },
        **results,
    }


def _length_buckets(lengths: np.ndarray, batch: int, calls: int) -> list[np.ndarray]:
    """Batch 1: the requests in order (each at its own length). Larger: requests sorted by length and
    cut into batches (length buckets), taken in a shuffled order, `calls` of them (cycling)."""
    if batch == 1:
        return [np.array([i % len(lengths)]) for i in range(calls)]
    order = np.argsort(lengths, kind="stable")
    chunks = [order[i : i + batch] for i in range(0, len(order) - batch + 1, batch)] or [np.resize(order, batch)]
    shuffled = np.random.default_rng(0).permutation(len(chunks))
    return [chunks[shuffled[i % len(chunks)]] for i in range(calls)]


ROW_COLUMNS = ["mode", "max_len", "batch", "p50 ms", "p99 ms", "events/s", "events/s (p50)", "CPU ms (p50)",
               "events/CPU s", "step ratio (p50 / CPU)", "padding", "state bytes/user (fp32, mean / at max_len)"]


def incremental_rows(result: dict[str, Any]) -> list[list[str]]:
    """Table rows (ROW_COLUMNS) of one `incremental_bench` result: a row per batch size and mode; the
    ratios are the step's events/s (p50-based, and per CPU second) over that row's."""
    rows = []
    state = result["state_bytes_per_user"]
    state_text = f"{state['fp32_mean']:,.0f} / {state['fp32_at_max_len']:,}"
    for key in (k for k in result if k.startswith("batch_")):
        entry = result[key]
        step_rate, step_cpu = entry["step"]["events_per_s_median"], entry["step"]["events_per_cpu_s"]
        for mode in MODES:
            m = entry[mode]
            rows.append([
                mode, str(result["max_len"]), key.removeprefix("batch_"), f"{m['p50_ms']:.3f}", f"{m['p99_ms']:.3f}",
                f"{m['events_per_s']:,.0f}", f"{m['events_per_s_median']:,.0f}", f"{m['cpu_p50_ms']:.3f}",
                f"{m['events_per_cpu_s']:,.0f}",
                f"{step_rate / m['events_per_s_median']:.1f}x / {step_cpu / m['events_per_cpu_s']:.1f}x",
                f"{m['padding_share']:.0%}" if "padding_share" in m else "-",
                state_text if mode == "step" else "-",
            ])
    return rows

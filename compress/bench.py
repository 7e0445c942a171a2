"""Benchmarks: latency, throughput and peak memory of a model artifact, in torch or onnxruntime.

Anything that scores batches can be measured: a *predict function* takes int64 `item_ids`
and `attention_mask` arrays [B, L] and returns scores. Adapters turn a torch artifact
(`load_model`, eager) or an ONNX artifact (`OnnxRecommender`, onnxruntime) into one.

Inputs are real test-split histories. Two length modes are measured: `fixed` pads every
sequence to the model's max length; `realistic` pads a batch only to its longest history
(batch 1: the history's own length), so it follows the test split's length distribution.

Ratios are honest only within one process: a BenchSession measures the teacher itself (the
run's first stage) before it computes any ratio, and every ratio in a `bench.json` is
`stage / teacher` for numbers measured by that same session (its `session` id is recorded).
"""

from __future__ import annotations

import gc
import os
import resource
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, get_args

import numpy as np
import torch

from compress.bench_config import BenchConfig
from compress.bench_results import BENCH_FILE, headline
from compress.runs.artifacts import dir_size_bytes, read_json, write_json
from compress.runs.run_data import load_run_data
from compress.data.batching import history_and_target, left_pad
from compress.data.sequences import SequenceData
from compress.runtime.environment import describe_device, resolve_device
from compress.models import RecommenderConfig, load_model
from compress.models.flops import flops_per_sequence
from compress.runs.layout import MANIFEST_FILE, read_manifest, stage_folder
from compress.stages.base import Artifact

LengthMode = Literal["fixed", "realistic"]
LENGTH_MODES: tuple[LengthMode, ...] = get_args(LengthMode)
PredictFn = Callable[[np.ndarray, np.ndarray], Any]  # (item_ids, attention_mask) [B, L] int64 -> scores


@dataclass
class Predictor:
    """A loaded model as the benchmark sees it."""

    predict: PredictFn
    engine: str
    params: int
    max_len: int
    config: RecommenderConfig | None = None  # the architecture, for the FLOP count (None: unknown)


def torch_predictor(folder: Path, device: torch.device, threads: int | None = None) -> Predictor:
    """PyTorch eager: `load_model` then scores of the last position (synchronised on CUDA).

    Threads are set around the whole measurement (`torch_threads`), not here.
    """
    model = load_model(folder, device)

    @torch.inference_mode()
    def predict(item_ids: np.ndarray, attention_mask: np.ndarray) -> torch.Tensor:
        ids = torch.as_tensor(item_ids).to(device)
        mask = torch.as_tensor(attention_mask).to(device)
        scores = model.next_item_scores(ids, mask)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return scores

    return Predictor(predict, "torch-eager", model.num_parameters(), model.config.max_len, model.config)


def onnx_predictor(folder: Path, device: torch.device, threads: int | None = None) -> Predictor:
    """onnxruntime through `OnnxRecommender` (CUDA provider first on a CUDA device; `threads`: intra-op)."""
    from compress.serve.onnx_model import OnnxRecommender

    model = OnnxRecommender(folder, device.type, threads=threads)
    engine = f"onnxruntime-{model.session.get_providers()[0].removesuffix('ExecutionProvider').lower()}"
    shape = model.metadata.get("model")  # exports before the FLOP column lack it
    config = RecommenderConfig(**shape) if shape else None
    return Predictor(model.scores, engine, model.num_parameters(), model.max_len, config)


def has_step(artifact: Artifact) -> bool:
    """Whether an artifact is an ONNX folder with a step model (export with `incremental: true`)."""
    return artifact.kind == "onnx" and (artifact.path / "step.onnx").is_file()


def engine_device(kind: str, device: torch.device) -> torch.device:
    """Where an artifact of `kind` runs in a session on `device`: onnxruntime without its CUDA provider uses the CPU."""
    if kind == "onnx" and device.type == "cuda":
        from compress.serve.onnx_model import onnx_device

        if onnx_device("cuda") == "cpu":
            return torch.device("cpu")
    return device


PREDICTORS: dict[str, Callable[[Path, torch.device, int | None], Predictor]] = {"torch": torch_predictor, "onnx": onnx_predictor}


def test_histories(data: SequenceData, max_len: int, count: int, seed: int) -> list[np.ndarray]:
    """`count` test-split histories (last `max_len` items) of seeded random users."""
    users = np.random.default_rng(seed).integers(0, data.num_users, size=count)
    return [history_and_target(data, int(u), "test")[0][-max_len:] for u in users]


def make_batch(histories: list[np.ndarray], mode: LengthMode, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Left-padded (item_ids, attention_mask): to `max_len` (fixed) or to the longest history (realistic)."""
    rows = [h[-max_len:] for h in histories]
    length = max_len if mode == "fixed" else max(len(r) for r in rows)
    ids = left_pad(rows, length)
    return ids, (ids > 0).astype(np.int64)


def time_calls(
    predict: PredictFn, batches: list[tuple[np.ndarray, np.ndarray]], warmup: int, cpu: list[float] | None = None
) -> np.ndarray:
    """Milliseconds per call for `batches[warmup:]`, after untimed calls on `batches[:warmup]`.

    With `cpu`, each call's CPU milliseconds (time.process_time: every thread of this process) are
    appended to it: on a shared machine the work a call costs, where wall time also counts waiting."""
    for ids, mask in batches[:warmup]:
        predict(ids, mask)
    times = []
    for ids, mask in batches[warmup:]:
        start, start_cpu = time.perf_counter(), time.process_time()
        predict(ids, mask)
        times.append(time.perf_counter() - start)
        if cpu is not None:
            cpu.append((time.process_time() - start_cpu) * 1000.0)
    return np.asarray(times) * 1000.0


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


def ratios(numbers: dict[str, float], reference: dict[str, float]) -> dict[str, float | None]:
    """`stage / teacher` for every headline number (latency 0.5 = twice as fast; None where the teacher is 0)."""
    return {key: (numbers[key] / reference[key] if numbers[key] is not None and reference.get(key) else None)
            for key in numbers}


class BenchSession:
    """Measures artifacts in this process; ratios are against the teacher as measured by this session."""

    def __init__(
        self,
        config: BenchConfig,
        device: torch.device,
        data: SequenceData,
        max_len: int,
        log: Callable[[str], None] = print,
    ) -> None:
        self.config = config
        self.device = device
        self.log = log
        self.id = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{id(self) % 10_000:04d}"
        count = max(config.warmup + config.iterations, config.batch_size_throughput)
        self.histories = test_histories(data, max_len, count, config.seed)
        self.pool = test_histories(data, max_len, 4 * config.batch_size_throughput, config.seed + 1)  # incremental
        self.settings = config.model_dump(exclude={"enabled"})
        with torch_threads(config.threads):
            self.environment = describe_device(device)
        self._references: dict[Path, dict[str, float]] = {}

    def measure(self, artifact: Artifact) -> dict[str, Any]:
        """Latency (batch 1), throughput (large batch) and peak memory of one artifact; no ratios."""
        cfg = self.config
        device = engine_device(artifact.kind, self.device)
        with torch_threads(cfg.threads), PeakMemory(device) as memory:
            predictor = PREDICTORS[artifact.kind](artifact.path, device, cfg.threads)
            singles = {m: [make_batch([h], m, predictor.max_len) for h in self.histories] for m in LENGTH_MODES}
            cpu_single: list[float] = []  # CPU ms of the fixed-length calls
            cpu_batch: list[float] = []
            latency = {
                m: latency_stats(time_calls(predictor.predict, singles[m][: cfg.warmup + cfg.iterations], cfg.warmup,
                                            cpu_single if m == "fixed" else None))
                for m in LENGTH_MODES
            }
            throughput = {}
            for mode in LENGTH_MODES:
                batch = make_batch(self.histories[: cfg.batch_size_throughput], mode, predictor.max_len)
                ms = time_calls(predictor.predict, [batch] * (1 + cfg.throughput_iterations), warmup=1,
                                cpu=cpu_batch if mode == "fixed" else None)
                throughput[mode] = cfg.batch_size_throughput * len(ms) / (ms.sum() / 1000.0)
            cpu_time = {"latency_p50_ms": float(np.median(cpu_single)),
                        "ms_per_sequence": float(np.sum(cpu_batch)) / (len(cpu_batch) * cfg.batch_size_throughput)}
            engine, params = predictor.engine, predictor.params
            flops = flops_per_sequence(predictor.config, predictor.max_len) if predictor.config else None
            del predictor
        extra = {"incremental": self.incremental(artifact)} if has_step(artifact) else {}
        return {
            "session": self.id,
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "kind": artifact.kind,
            "engine": engine,
            "device": str(device),
            "environment": self.environment,
            "settings": self.settings,
            "params": params,
            "size_bytes": dir_size_bytes(artifact.path),
            "latency_ms": latency,
            "throughput_seq_per_s": throughput,
            "memory": memory.result(),
            "cpu_time": cpu_time,  # fixed length: CPU ms of a batch-1 call (p50), per sequence at the large batch
            "flops_per_sequence": flops,
            **extra,
        }

    def incremental(self, artifact: Artifact) -> dict[str, Any]:
        """Full pass (padded, real lengths) vs the step model per event (compress/bench_incremental.py)."""
        from compress.bench_incremental import incremental_bench

        cfg = self.config
        return incremental_bench(artifact.path, self.pool, (1, cfg.batch_size_throughput), cfg.warmup,
                                 cfg.iterations, cfg.throughput_iterations, cfg.threads)

    def reference(self, teacher: Artifact) -> dict[str, float]:
        """The teacher's headline numbers, measured by this session (once)."""
        key = teacher.path.resolve()
        if key not in self._references:
            self.log(f"bench: measuring the teacher {teacher.path} in this process (ratios need it)")
            self._references[key] = headline(self.measure(teacher))
        return self._references[key]

    def bench(self, artifact: Artifact, teacher: Artifact) -> dict[str, Any]:
        """Measure `artifact` and add its ratios to `teacher`, both measured by this session."""
        if self.config.rounds > 1:
            return self._bench_rounds(artifact, teacher)
        result = self.measure(artifact)
        numbers = headline(result)
        if artifact.path.resolve() == teacher.path.resolve():
            self._references[teacher.path.resolve()] = numbers
        reference = self.reference(teacher)
        result["reference"] = {"session": self.id, **reference}
        result["ratios"] = ratios(numbers, reference)
        return result

    def _bench_rounds(self, artifact: Artifact, teacher: Artifact) -> dict[str, Any]:
        """`rounds` x (teacher, then `artifact`): medians of the numbers, median of the per-round ratios."""
        is_teacher = artifact.path.resolve() == teacher.path.resolve()
        results, references = [], []
        for _ in range(self.config.rounds):
            reference = None if is_teacher else headline(self.measure(teacher))
            results.append(self.measure(artifact))
            references.append(headline(results[-1]) if is_teacher else reference)
        return combine_rounds(results, references, self.id)

    def is_current(self, result: dict[str, Any]) -> bool:
        """Whether a stored result was measured with these settings on this machine setup."""
        return result.get("settings") == self.settings and result.get("environment") == self.environment


def combine_rounds(results: list[dict[str, Any]], references: list[dict[str, float]], session: str) -> dict[str, Any]:
    """One result of several rounds: medians of the numbers, the largest memory, the median of the
    per-round ratios to the teacher measured in the same round; each round's batch-1 p50 is kept."""
    result = {**results[0], **median_of(
        [{k: r[k] for k in ("latency_ms", "throughput_seq_per_s", "cpu_time") if k in r} for r in results]
    )}
    result["memory"] = max((r["memory"] for r in results), key=lambda m: m["increase_bytes"])
    result["rounds"] = len(results)
    result["round_latency_p50_ms"] = [r["latency_ms"]["fixed"]["p50"] for r in results]
    result["reference"] = {"session": session, **median_of(references)}
    per_round = [ratios(headline(r), ref) for r, ref in zip(results, references)]
    result["ratios"] = {
        key: (None if any(r[key] is None for r in per_round) else float(np.median([r[key] for r in per_round])))
        for key in per_round[0]
    }
    return result


def bench_interleaved(
    session: BenchSession, artifacts: dict[str, Artifact], teacher_of: dict[str, str],
    teachers: dict[str, Artifact], rounds: int,
) -> dict[str, dict[str, Any]]:
    """Measure several artifacts side by side in `rounds` rounds; in every round each distinct teacher
    first, then every artifact (so drift of the machine hits all of them alike).

    `teacher_of[name]` keys `teachers`; an artifact that is a teacher, or appears under several
    names, is measured once per round. Returns name -> a bench result as `BenchSession.bench` gives it (medians, ratios as the
    median of per-round ratios), with `round_latency_p50_ms` for the noise between rounds; and
    `TEACHER_PREFIX + key` -> each teacher's own result (ratios 1).
    """
    measured: dict[str, list[dict[str, Any]]] = {name: [] for name in artifacts}
    references: dict[str, list[dict[str, float]]] = {name: [] for name in artifacts}
    teacher_rounds: dict[str, list[dict[str, Any]]] = {key: [] for key in teachers}
    for index in range(rounds):
        session.log(f"bench round {index + 1}/{rounds}: {len(teachers)} teacher(s), {len(artifacts)} artifact(s)")
        for key, artifact in teachers.items():
            teacher_rounds[key].append(session.measure(artifact))
        this_round: dict[Path, dict[str, Any]] = {t.path.resolve(): teacher_rounds[k][-1] for k, t in teachers.items()}
        for name, artifact in artifacts.items():
            key, where = teacher_of[name], artifact.path.resolve()
            if where not in this_round:  # the same artifact under several names is measured once a round
                this_round[where] = session.measure(artifact)
            measured[name].append(this_round[where])
            references[name].append(headline(teacher_rounds[key][-1]))
    results = {name: combine_rounds(measured[name], references[name], session.id) for name in artifacts}
    results.update({
        TEACHER_PREFIX + key: combine_rounds(r, [headline(x) for x in r], session.id) for key, r in teacher_rounds.items()
    })
    return results


TEACHER_PREFIX = "teacher:"  # bench_interleaved's key for a teacher's own result


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """What a manifest stage entry keeps of a bench.json: headline numbers, ratios, where measured."""
    return {
        "engine": result["engine"],
        "device": result["device"],
        "session": result["session"],
        **headline(result),
        "ratios": result["ratios"],
    }


def bench_stage(
    session: BenchSession, run_dir: Path, entry: dict[str, Any], teacher: Artifact, reuse: bool = False
) -> dict[str, Any]:
    """Write `bench.json` beside the stage's `metrics.json` and return its summary.

    With `reuse`, a stored bench.json measured with the same settings and environment is kept.
    """
    path = stage_folder(run_dir, entry) / BENCH_FILE
    if reuse and path.is_file() and session.is_current(stored := read_json(path)):
        return summary(stored)
    artifact = Artifact.of_entry(run_dir, entry)
    result = {"artifact": entry["output"], **session.bench(artifact, teacher)}
    result["reference"] = {"artifact": os.path.relpath(teacher.path, run_dir), **result["reference"]}
    write_json(path, result)
    numbers = summary(result)
    session.log(
        f"bench {entry['name']}: p50 {numbers['latency_p50_ms']:.2f} ms (x{numbers['ratios']['latency_p50_ms']:.2f}), "
        f"{numbers['throughput_seq_per_s']:,.0f} seq/s at batch {session.config.batch_size_throughput} "
        f"(x{numbers['ratios']['throughput_seq_per_s']:.2f}) on {session.device}"
    )
    return numbers


def teacher_of(run_dir: Path, manifest: dict[str, Any]) -> Artifact:
    """The run's teacher: the first stage's artifact."""
    return Artifact.of_entry(run_dir, manifest["stages"][0])


def bench_run(
    run_dir: Path,
    config: BenchConfig | None = None,
    device: str = "auto",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Re-measure every stage of a finished run in this one process; update bench.json files and the manifest.

    `config` defaults to the run's recipe `bench` section. Returns the updated manifest.
    """
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    recipe = manifest["recipe"]
    config = config or BenchConfig.model_validate(recipe.get("bench", {}))
    data = load_run_data(run_dir, manifest)
    session = BenchSession(config, resolve_device(device), data, recipe["data"]["max_len"], log)
    return bench_stages(session, run_dir)


def bench_stages(
    session: BenchSession, run_dir: Path, teacher: Artifact | None = None, last_only: bool = False
) -> dict[str, Any]:
    """Measure a run's stages (or only its last) in `session`, ratios to `teacher` (default: the run's first
    stage); update their bench.json files and the manifest, and return the manifest."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    teacher = teacher or teacher_of(run_dir, manifest)
    for entry in manifest["stages"][-1:] if last_only else manifest["stages"]:
        entry["bench"] = bench_stage(session, run_dir, entry, teacher)
    write_json(run_dir / MANIFEST_FILE, manifest)
    return manifest

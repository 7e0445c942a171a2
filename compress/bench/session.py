"""A bench session: latency, throughput and peak memory of artifacts, measured in this process.

Anything that scores batches can be measured: an artifact handler (compress/handlers/) gives a
*predictor* whose function takes int64 `item_ids` and `attention_mask` arrays [B, L] and returns
scores; compress/bench/timing.py times it.

Ratios are honest only within one process: a BenchSession measures the teacher itself (the
run's first stage) before it computes any ratio, and every ratio in a `bench.json` is
`stage / teacher` for numbers measured by that same session (its `session` id is recorded).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from compress.handlers import Artifact
from compress.bench.config import BenchConfig
from compress.bench.results import headline
from compress.bench.timing import (
    LENGTH_MODES, PeakMemory, latency_stats, make_batch, median_of, test_histories, time_calls, torch_threads,
)
from compress.data.sequences import SequenceData
from compress.models.flops import flops_per_sequence
from compress.runs.files import dir_size_bytes
from compress.runtime.environment import describe_device


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
        device = artifact.device(self.device)
        with torch_threads(cfg.threads), PeakMemory(device) as memory:
            predictor = artifact.predictor(device, cfg.threads)
            call = lambda batch: predictor.predict(*batch)  # noqa: E731
            singles = {m: [make_batch([h], m, predictor.max_len) for h in self.histories] for m in LENGTH_MODES}
            single = {m: time_calls(call, singles[m][: cfg.warmup + cfg.iterations], cfg.warmup) for m in LENGTH_MODES}
            latency = {m: latency_stats(single[m].wall_ms) for m in LENGTH_MODES}
            large = {
                m: time_calls(call, [make_batch(self.histories[: cfg.batch_size_throughput], m, predictor.max_len)]
                              * (1 + cfg.throughput_iterations), warmup=1)
                for m in LENGTH_MODES
            }
            throughput = {m: cfg.batch_size_throughput * len(t.wall_ms) / (t.wall_ms.sum() / 1000.0) for m, t in large.items()}
            cpu_time = {"latency_p50_ms": float(np.median(single["fixed"].cpu_ms)),
                        "ms_per_sequence": float(large["fixed"].cpu_ms.mean()) / cfg.batch_size_throughput}
            engine, params = predictor.engine, predictor.params
            flops = flops_per_sequence(predictor.config, predictor.max_len) if predictor.config else None
            del predictor, call
        extra = {"incremental": self.incremental(artifact)} if artifact.step_model() else {}
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
        """Full pass (padded, real lengths) vs the step model per event (compress/bench/incremental.py)."""
        from compress.bench.incremental import incremental_bench


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
        this_round: dict[tuple, dict[str, Any]] = {t.identity: teacher_rounds[k][-1] for k, t in teachers.items()}
        for name, artifact in artifacts.items():
            key, where = teacher_of[name], artifact.identity
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

"""Benchmarks of a run folder: every stage's bench.json, its manifest summary, `compress bench`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from compress.handlers import Artifact, artifact_of_entry
from compress.bench.config import BenchConfig
from compress.bench.results import BENCH_FILE, headline
from compress.bench.session import BenchSession
from compress.runs.files import read_json, write_json
from compress.runs.layout import MANIFEST_FILE, read_manifest, stage_folder
from compress.runs.run_data import load_run_data
from compress.runtime.environment import resolve_device


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
    artifact = artifact_of_entry(run_dir, entry).served_by(session.config.engine)  # ONNX stages: the bench's engine
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
    return artifact_of_entry(run_dir, manifest["stages"][0])


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

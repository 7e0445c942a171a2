"""Gather what a report shows from run folders: manifests, metrics and bench.json files.

Ratios are `stage / teacher` (the run's first stage). Quality, parameter and size ratios are
computed here from the manifest (deterministic numbers); speed and memory ratios are taken
as recorded in each bench.json, where the teacher was measured in the same process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compress.runs.artifacts import read_json
from compress.bench import BENCH_FILE, headline
from compress.runs.integrity import verify_folder
from compress.runs.layout import read_manifest, stage_folder

QUALITY = ("ndcg@10", "hr@10", "mrr@10")
STATIC = ("params", "size_bytes")
TIMED = ("latency_p50_ms", "throughput_seq_per_s", "peak_memory_bytes")


@dataclass
class StageRow:
    """One stage of one run: its numbers and their ratios to the run's teacher."""

    run: str
    stage: str
    values: dict[str, float]
    ratios: dict[str, float | None]
    bench: dict[str, Any] | None = None  # the stage's bench.json, if it was benchmarked


@dataclass
class RunSummary:
    name: str
    folder: Path
    manifest: dict[str, Any]
    rows: list[StageRow] = field(default_factory=list)

    @property
    def final(self) -> StageRow:
        return self.rows[-1]


def collect_run(run_dir: Path) -> RunSummary:
    """Read a run folder into rows (RunFolderError if it is not one)."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    run = RunSummary(manifest["name"], run_dir, manifest)
    teacher: dict[str, float] | None = None
    for entry in manifest["stages"]:
        verify_folder(stage_folder(run_dir, entry))
        bench_file = stage_folder(run_dir, entry) / BENCH_FILE
        bench = read_json(bench_file) if bench_file.is_file() else None
        values = {key: entry["metrics"][key] for key in QUALITY}
        values.update(params=entry["params"], size_bytes=entry["size_bytes"])
        teacher = teacher or values
        ratios: dict[str, float | None] = {k: _ratio(values[k], teacher[k]) for k in (*QUALITY, *STATIC)}
        if bench is not None:
            numbers = headline(bench)
            values.update({key: numbers[key] for key in TIMED})
            ratios.update({key: bench["ratios"][key] for key in TIMED})
        run.rows.append(StageRow(run.name, entry["name"], values, ratios, bench))
    return run


def sessions(runs: list[RunSummary]) -> set[str]:
    """The bench sessions (processes) the timed numbers of `runs` come from."""
    return {row.bench["session"] for run in runs for row in run.rows if row.bench}


def _ratio(value: float, reference: float) -> float | None:
    return value / reference if reference else None

"""Gather what a report shows from run folders: manifests, metrics and bench.json files.

Ratios are `stage / teacher` (the run's first stage). Quality, parameter and size ratios are
computed here from the manifest (deterministic numbers). Latency and throughput ratios are the
stage's number over the teacher's number of the same bench session and rounds (bench.json's
`reference`, the teacher measured just before the stage in each round): both numbers are shown, so a
reader can recompute the ratio (bench.json's `ratios` keeps the median of per-round ratios, which
can differ from it when the machine drifts between rounds). Memory ratios are taken as recorded.
A run with a `controls.json` (benchmarks/headline.py, compress/studies/controls.py) also gets its control
rows (scratch, scratch-converged, teacher-onnx: their runs' final stages), the quality of its student rows over
several training seeds (mean, std), and the paired-bootstrap NDCG@10 differences to the teacher.
A run with a `peers.json` (benchmarks/headline.py --peers, compress/bench/peers.py) gets its peer rows: the
tools a user would pick instead, on the same teacher, timed in the same bench session.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compress.runs.files import read_json
from compress.bench.results import BENCH_FILE, headline
from compress.runs.integrity import verify_folder
from compress.runs.layout import read_manifest, stage_folder
from compress.report.noise import like_memory, scoring_model_bytes

CONTROLS_FILE = "controls.json"  # written by compress.studies.controls.write_controls
PEERS_FILE = "peers.json"  # written by compress.bench.peers.run_peers

QUALITY = ("ndcg@10", "hr@10", "mrr@10")
STATIC = ("params", "size_bytes")
TIMED = ("latency_p50_ms", "throughput_seq_per_s", "peak_memory_bytes")
PHYSICAL = ("flops_per_sequence", "gflops_batch1", "gflops_throughput")  # counted FLOPs and the rate achieved
SAME_ROUNDS = ("latency_p50_ms", "throughput_seq_per_s")  # ratios = row / the teacher of the same rounds, both shown


@dataclass
class StageRow:
    """One stage of one run: its numbers and their ratios to the run's teacher."""

    run: str
    stage: str
    values: dict[str, float]
    ratios: dict[str, float | None]
    bench: dict[str, Any] | None = None  # the stage's bench.json, if it was benchmarked
    key: str | None = None  # the stage's cache id: equal ids are one shared stage (e.g. an ablation's teacher)
    seeds: dict[str, Any] | None = None  # quality over training seeds: {"seeds", "mean", "std", "values"}
    difference: dict[str, Any] | None = None  # paired bootstrap of NDCG@10 minus the teacher's
    onnx_ratios: dict[str, float] | None = None  # timed numbers / the ONNX teacher's (same bench session)
    note: str = ""
    training: dict[str, Any] | None = None  # a control's epochs run and training seconds (controls.json)

    @property
    def teacher_timing(self) -> dict[str, float]:
        """The teacher's latency and throughput in this row's bench session and rounds: what its
        timed ratios divide by ({} when it was not benchmarked against a teacher)."""
        reference = (self.bench or {}).get("reference") or {}
        return {key: reference[key] for key in SAME_ROUNDS if reference.get(key)}


@dataclass
class RunSummary:
    name: str
    folder: Path
    manifest: dict[str, Any]
    rows: list[StageRow] = field(default_factory=list)
    controls: list[StageRow] = field(default_factory=list)  # from controls.json: scratch, teacher-onnx
    extras: dict[str, Any] = field(default_factory=dict)  # the rest of controls.json (seeds, paired, skipped)
    peers: list[StageRow] = field(default_factory=list)  # from peers.json: torch.compile, OpenVINO, ... on the teacher
    peer_record: dict[str, Any] = field(default_factory=dict)  # peers.json's skipped peers and versions

    @property
    def final(self) -> StageRow:
        return self.rows[-1]


def collect_run(run_dir: Path, session: str | None = None) -> RunSummary:
    """Read a run folder into rows (RunFolderError if it is not one); with `session`, timings
    measured in another bench session are left out."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    run = RunSummary(manifest["name"], run_dir, manifest)
    teacher: dict[str, float] | None = None
    for entry in manifest["stages"]:
        row = _stage_row(run_dir, run.name, entry, teacher, session)
        teacher = teacher or row.values
        run.rows.append(row)
    controls_file = run_dir / CONTROLS_FILE
    record = read_json(controls_file) if controls_file.is_file() else None
    if record is not None and record.get("stage_ids") == [entry["config_hash"] for entry in manifest["stages"]]:
        _add_controls(run, record, teacher or {})  # (controls of an earlier version of the run are left out)
    peers_file = run_dir / PEERS_FILE
    record = read_json(peers_file) if peers_file.is_file() else None
    if record is not None and record.get("stage_ids") == [entry["config_hash"] for entry in manifest["stages"]]:
        _add_peers(run, record)
    drop_unlike_memory_ratios(run)
    return run


def _add_peers(run: RunSummary, record: dict[str, Any]) -> None:
    """Peer rows (each keyed as a stage entry) from peers.json, their timed ratios to the same rounds' teacher."""
    for peer in record.get("rows", []):
        row = StageRow(run.name, peer["name"], dict(peer["values"]), dict(peer["ratios"]), peer.get("bench"),
                       difference=peer.get("difference"), note=peer.get("note", ""))
        row.ratios.update(same_round_ratios(row))
        run.peers.append(row)
    run.peer_record = {k: record[k] for k in ("skipped", "versions") if k in record}


def drop_unlike_memory_ratios(run: RunSummary) -> None:
    """A peak-memory ratio compares two measurements of one kind (same engine, same memory kind), or is
    dropped: e.g. an onnxruntime session's RSS growth over a PyTorch model's is not a saving."""
    teacher_bench = run.rows[0].bench if run.rows else None
    for row in [*run.rows, *run.controls]:
        if "peak_memory_bytes" in row.ratios and row is not (run.rows[0] if run.rows else None):
            if not like_memory(row.bench, teacher_bench):
                row.ratios["peak_memory_bytes"] = None


def _stage_row(
    run_dir: Path, run: str, entry: dict[str, Any], teacher: dict[str, float] | None, session: str | None = None
) -> StageRow:
    verify_folder(stage_folder(run_dir, entry))
    bench_file = stage_folder(run_dir, entry) / BENCH_FILE
    bench = read_json(bench_file) if bench_file.is_file() else None
    if bench is not None and session is not None and bench.get("session") != session:
        bench = None
    values = {key: entry["metrics"][key] for key in QUALITY}
    values.update(params=entry["params"], size_bytes=entry["size_bytes"])
    model_bytes = scoring_model_bytes(Path(run_dir) / entry["output"]) if entry.get("output") else None
    if model_bytes is not None:
        values["model_bytes"] = model_bytes  # the scoring model alone (model.onnx / model.safetensors)
    teacher = teacher or values
    ratios: dict[str, float | None] = {k: _ratio(values[k], teacher[k]) for k in (*QUALITY, *STATIC)}
    if model_bytes is not None and teacher.get("model_bytes"):
        ratios["model_bytes"] = model_bytes / teacher["model_bytes"]
    if bench is not None:
        numbers = headline(bench)
        values.update({key: numbers[key] for key in TIMED})
        ratios.update({key: bench["ratios"][key] for key in TIMED})
        values.update({key: numbers[key] for key in PHYSICAL if numbers.get(key) is not None})
    row = StageRow(run, entry["name"], values, ratios, bench, key=entry.get("config_hash"))
    row.ratios.update(same_round_ratios(row))
    return row


def same_round_ratios(row: StageRow) -> dict[str, float]:
    """Latency and throughput ratios of a benchmarked row: its number over the teacher's number of the
    same bench rounds (both shown in a report's row, so the ratio can be recomputed from it)."""
    return {key: row.values[key] / teacher for key, teacher in row.teacher_timing.items() if key in row.values}


def _add_controls(run: RunSummary, record: dict[str, Any], teacher: dict[str, float]) -> None:
    """Control rows, seed statistics, paired differences and ratios to the ONNX teacher from controls.json."""
    parent = run.folder.parent
    paired = record.get("paired") or {}
    for control in record.get("controls", []):
        folder = parent / control["run"]
        if not folder.is_dir():
            continue
        entry = read_manifest(folder)["stages"][-1]
        row = _stage_row(folder, run.name, entry, teacher)
        row.stage, row.note, row.training = control["name"], control.get("note", ""), control.get("training")
        row.difference = (paired.get("controls") or {}).get(control["name"])
        run.controls.append(row)
    seeds = record.get("seeds") or {}
    if len(seeds.get("seeds", [])) > 1:
        students = [parent / name for name in seeds.get("students", {}).values()]
        _seed_statistics(run.rows[1:], students, list(range(1, len(run.rows))))
        scratch = next((row for row in run.controls if row.stage == "scratch"), None)
        if scratch is not None:
            _seed_statistics([scratch], [parent / name for name in seeds.get("scratch", {}).values()], [-1])
    for row in run.rows[1:]:
        row.difference = (paired.get("stages") or {}).get(row.stage)
    onnx_teacher = next((row for row in run.controls if row.stage == "teacher-onnx" and row.bench), None)
    if onnx_teacher is not None:
        for row in [*run.rows, *run.controls]:
            if row.bench and row.bench.get("session") == onnx_teacher.bench["session"]:
                row.onnx_ratios = {k: row.values[k] / onnx_teacher.values[k] for k in TIMED[:2] if onnx_teacher.values[k]}
    run.extras = {k: v for k, v in record.items() if k in ("seeds", "paired", "skipped", "training")}


def _seed_statistics(rows: list[StageRow], folders: list[Path], indices: list[int]) -> None:
    """Mean and standard deviation of each row's quality over the runs in `folders` (row i: stage
    `indices[i]` of each run); nothing unless two or more runs with the same number of stages are found."""
    manifests = [read_manifest(folder) for folder in folders if folder.is_dir()]
    if len(manifests) < 2 or len({len(m["stages"]) for m in manifests}) > 1:
        return
    for row, index in zip(rows, indices):
        per_seed = [{k: m["stages"][index]["metrics"][k] for k in QUALITY} for m in manifests]
        row.seeds = {
            "seeds": len(per_seed),
            "mean": {k: statistics.fmean(v[k] for v in per_seed) for k in QUALITY},
            "std": {k: statistics.stdev(v[k] for v in per_seed) for k in QUALITY},
            "values": per_seed,
        }


def sessions(runs: list[RunSummary]) -> set[str]:
    """The bench sessions (processes) the timed numbers of `runs` (stages and controls) come from."""
    return {row.bench["session"] for run in runs for row in [*run.rows, *run.controls] if row.bench}


def _ratio(value: float, reference: float) -> float | None:
    return value / reference if reference else None

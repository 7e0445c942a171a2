"""Assemble a report of one or more runs: tables, plots, recipe, data and environment, written as
`report.md` (+ PNGs beside it), a self-contained `report.html` and the raw rows in `report.json`."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from compress.runs.artifacts import atomic_write, write_json
from compress.report.collect import RunSummary, collect_run, sessions
from compress.report.document import Block, Code, Heading, Image, Text, to_html, to_markdown
from compress.report.plots import plot_cost_per_stage, plot_quality_latency, plot_variants
from compress.report.tables import bench_table, incremental_table, key_value_table, stage_table, variant_table

RATIO_NOTE = (
    "Ratios in parentheses are stage / teacher (the run's first stage): latency 0.50x is twice as fast, "
    "throughput 2.00x serves twice as many sequences. Quality, parameter and size ratios come from the "
    "manifest; latency, throughput and memory ratios are taken from each stage's bench.json, where the "
    "teacher was measured in the same process as the stage. With bench rounds > 1, a stage's numbers are "
    "medians over its rounds and its ratio is the median of per-round ratios against a teacher measured "
    "just before it, so a ratio can differ from the quotient of the medians shown."
)

INCREMENTAL_NOTE = (
    "Each request is one new event of a real test user. full_padded: the full pass over the history padded "
    "to max_len; full_real: the full pass at real lengths (batch 1 at its own length, larger batches in length "
    "buckets); step: the step model (step.onnx) over the user's cached keys/values, through the serving code. "
    "events/s (p50) = batch / median call time; events/CPU s = batch / median CPU time of the calling "
    "thread; the ratios are the step's over the row's."
)


@dataclass
class ReportFiles:
    markdown: Path
    html: Path
    json: Path
    images: list[Path]


def build_report(
    run_dirs: list[Path], out: Path, variants: list[tuple[str, str]] | None = None, title: str | None = None
) -> ReportFiles:
    """Write the report of `run_dirs` into `out`; `variants` (name, changes), one per run, adds an ablation table."""
    runs = [collect_run(Path(d)) for d in run_dirs]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    title = title or "compress report: " + ", ".join(run.name for run in runs)
    with_run = len(runs) > 1
    all_rows = [row for run in runs for row in run.rows]

    images = [
        plot_quality_latency(all_rows, out / "quality_latency.png", with_run),
        plot_cost_per_stage(all_rows, out / "cost_per_stage.png", with_run),
    ]
    blocks: list[Block] = [Heading(title, 1), Text(_summary(runs))]
    if variants is not None:
        images.append(plot_variants([run.final for run in runs], [name for name, _ in variants], out / "ablation.png"))
        blocks += [
            Heading("Ablation"),
            variant_table(runs, variants),
            Image(images[-1], "Each variant's final stage: NDCG@10 and batch-1 latency p50."),
        ]
    blocks += [
        Heading("Stages"),
        stage_table(runs),
        Text(RATIO_NOTE),
        Image(images[0], "NDCG@10 against batch-1 latency p50 at max length; the Pareto front is ringed."),
        Image(images[1], "Size on disk and batch-1 latency p50 per stage."),
        Heading("Benchmark details"),
        bench_table(runs),
    ]
    incremental = incremental_table(runs)
    if incremental is not None:
        blocks += [Heading("Incremental serving (one new event per user)"), Text(INCREMENTAL_NOTE), incremental]
    for run in runs:
        blocks += _run_sections(run, with_run)

    paths = ReportFiles(out / "report.md", out / "report.html", out / "report.json", images)
    atomic_write(paths.markdown, lambda tmp: tmp.write_text(to_markdown(blocks)))
    atomic_write(paths.html, lambda tmp: tmp.write_text(to_html(blocks, title)))
    write_json(paths.json, {
        "title": title,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "variants": variants,
        "runs": [{"name": run.name, "folder": str(run.folder), "stages": [asdict(r) for r in run.rows]} for run in runs],
    })
    return paths


def _summary(runs: list[RunSummary]) -> str:
    devices = sorted({row.bench["device"] for run in runs for row in run.rows if row.bench})
    found = sessions(runs)
    timing = (
        f"Benchmarked on {', '.join(devices)} in {len(found)} bench session(s) (one process each)."
        if found else "No stage was benchmarked (bench.enabled was off): run `compress bench <run>`."
    )
    return f"{len(runs)} run(s), {sum(len(run.rows) for run in runs)} stage(s). {timing}"


def _run_sections(run: RunSummary, with_run: bool) -> list[Block]:
    manifest = run.manifest
    prefix = f"{run.name}: " if with_run else ""
    environment = dict(manifest["environment"])
    bench_envs = {str(row.bench["environment"]) for row in run.rows if row.bench}
    if bench_envs:
        environment["bench environment"] = "; ".join(sorted(bench_envs))
    return [
        Heading(f"{prefix}Recipe"),
        Code(yaml.safe_dump(manifest["recipe"], sort_keys=False), "yaml"),
        Heading(f"{prefix}Data"),
        key_value_table({"fingerprint": manifest["data"]["fingerprint"], **manifest["data"]["stats"]}, "statistic"),
        Heading(f"{prefix}Environment"),
        key_value_table({**environment, **{f"version {k}": v for k, v in manifest["versions"].items()}}, "what"),
    ]

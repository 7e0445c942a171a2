"""Assemble a report of one or more runs: tables, plots, recipe, data and environment, written as
`report.md` (+ PNGs beside it), a self-contained `report.html` and the raw rows in `report.json`."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from compress.runs.files import atomic_write, write_json
from compress.evaluation.bootstrap import describe
from compress.report.collect import RunSummary, StageRow, collect_run, sessions
from compress.report.document import Block, Code, Heading, Image, Text, to_html, to_markdown
from compress.report.plots import plot_cost_per_stage, plot_quality_latency, plot_variants
from compress.report.noise import SMALL_TEST, count_test_users, half_width, latency_noise, popularity_warning
from compress.report.tables import (NOISE_NOTE, bench_table, incremental_table, key_value_table, peers_table,
                                    stage_table, variant_table)

RATIO_NOTE = (
    "Ratios in parentheses are stage / teacher (the run's first stage): latency 0.50x is twice as fast, "
    "throughput 2.00x serves twice as many sequences. Quality, parameter and size ratios come from the "
    "manifest. A latency or throughput ratio is the row's number divided by the teacher's number in the "
    "row's own \"teacher ..., same rounds\" column: the teacher measured in the same process (bench "
    "session), just before the row in each bench round. With bench rounds > 1 both are medians over the "
    "rounds (each round's p50 is under Benchmark details); the teacher's own row shows the median of all its "
    "rounds, so it can differ from the teacher column of another row when the machine drifts. bench.json's "
    "`ratios` also keeps the median of the per-round ratios."
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
    run_dirs: list[Path],
    out: Path,
    variants: list[tuple[str, str]] | None = None,
    title: str | None = None,
    differences: dict[str, dict | None] | None = None,
    session: str | None = None,
) -> ReportFiles:
    """Write the report of `run_dirs` into `out`; `variants` (name, changes), one per run, adds an ablation
    table (`differences`: each variant's NDCG@10 difference to the first, paired bootstrap). With
    `session`, only timings of that bench session are shown. A stage several runs share (same cache
    id, e.g. the teacher of every variant) is shown once."""
    runs = [collect_run(Path(d), session) for d in run_dirs]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    title = title or "compress report: " + ", ".join(run.name for run in runs)
    with_run = len(runs) > 1
    plotted = _unique_rows(runs, [name for name, _ in variants] if variants else None)

    baselines = {run.manifest["baseline"]["metrics"]["ndcg@10"] for run in runs if run.manifest.get("baseline")}
    images = [
        plot_quality_latency([row for row, _ in plotted], out / "quality_latency.png", labels=[n for _, n in plotted],
                             baseline=baselines.pop() if len(baselines) == 1 else None,
                             users=[_users_of(row, runs) for row, _ in plotted]),
        plot_cost_per_stage([row for row, _ in plotted], out / "cost_per_stage.png", with_run),
    ]
    blocks: list[Block] = [Heading(title, 1), Text(_summary(runs)), *_small_data_notes(runs)]
    if variants is not None:
        images.append(plot_variants(
            [run.final for run in runs], [name for name, _ in variants], out / "ablation.png", differences
        ))
        blocks += [
            Heading("Ablation"),
            variant_table(runs, variants, differences),
            Text(ABLATION_NOTE.format(reference=variants[0][0])),
            Image(images[-1], "Each variant's final stage: NDCG@10 (whiskers: 95% interval of the difference to the "
                              "first variant) and batch-1 latency p50 (whiskers: lowest and highest bench round)."),
        ]
    blocks += [
        Heading("Stages"),
        stage_table(runs, shared=with_run),
        Text(RATIO_NOTE),
        *([Text(NOISE_NOTE)] if any(latency_noise(row.bench) for run in runs for row in run.rows if row.bench) else []),
        *([Text(MODEL_FILE_NOTE)] if any("model_bytes" in row.values for run in runs for row in run.rows) else []),
        *_control_notes(runs),
        Image(images[0], "NDCG@10 against batch-1 latency p50 at max length; the Pareto front is ringed; "
                         "numbers are keyed beside the plot; whiskers: approximate 95% interval over the test users; "
                         "dotted: the popularity baseline; the y-axis starts at 0."),
        Image(images[1], "Size on disk and batch-1 latency p50 per stage."),
        Heading("Benchmark details"),
        bench_table(runs, shared=with_run),
    ]
    peers = peers_table(runs)
    if peers is not None:
        blocks += [Heading("Peers: what a user would pick instead, on the same teacher"), Text(PEERS_NOTE), peers,
                   *_peer_notes(runs)]
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
        "differences": differences,
        "runs": [{
            "name": run.name, "folder": str(run.folder), "stages": [asdict(r) for r in run.rows],
            "controls": [{"name": r.stage, **asdict(r)} for r in run.controls], **run.extras,
            **({"peers": [{"name": r.stage, **asdict(r)} for r in run.peers], "peers_skipped": run.peer_record.get(
                "skipped", {}), "peer_versions": run.peer_record.get("versions", {})} if run.peer_record else {}),
        } for run in runs],
    })
    return paths


PEERS_NOTE = (
    "Each peer is applied to the run's teacher and timed in the same bench session as the stages, on the same "
    "test histories; ratios are to the teacher in PyTorch eager measured in the same rounds. ΔNDCG@10: the peer "
    "minus the teacher on the same test users, mean and 95% paired-bootstrap interval. The engine column says "
    "what ran it."
)


def _peer_notes(runs: list[RunSummary]) -> list[Block]:
    """What each peer is, and the peers that were skipped, with why."""
    lines = []
    for run in runs:
        prefix = f"{run.name}: " if len(runs) > 1 else ""
        lines += [f"{prefix}{row.stage}: {row.note}." for row in run.peers if row.note]
        lines += [f"{prefix}skipped {name}: {why}." for name, why in run.peer_record.get("skipped", {}).items()]
    return [Text(line) for line in lines]


ABLATION_NOTE = (
    "All final stages (and each distinct teacher) were timed in one bench session, round by round "
    "(every teacher, then every variant, in each round): a latency is the median over the rounds, "
    "[lowest-highest] the spread between rounds. A p50 difference to {reference} is marked ≈ (within "
    "noise) when the two round ranges overlap. ΔNDCG@10 is the variant minus {reference} on the same "
    "test users, mean and 95% paired-bootstrap interval (2,000 resamples, seed 0); * marks an interval "
    "that excludes 0."
)


def _unique_rows(runs: list[RunSummary], names: list[str] | None = None) -> list[tuple[StageRow, str]]:
    """Every stage and control row once (a stage several runs share, e.g. a common teacher, once), labelled
    with the runs that have it (`names`: what to call each run, e.g. its ablation variant)."""
    names = names or [run.name for run in runs]
    owners: dict[str, list[str]] = {}
    for run, name in zip(runs, names):
        for row in run.rows:
            if row.key is not None:
                owners.setdefault(row.key, []).append(name)
    shown: set[str] = set()
    out = []
    for run, name in zip(runs, names):
        for row in [*run.rows, *run.controls]:
            if row.key is not None:
                if row.key in shown:
                    continue
                shown.add(row.key)
            label = f"{row.stage} (control)" if row in run.controls else row.stage
            who = owners.get(row.key or "", [name])
            who_label = "all" if len(runs) > 1 and len(who) == len(runs) else ", ".join(who)
            out.append((row, f"{who_label}: {label}" if len(runs) > 1 else label))
    return out


def _times(ratio: float | None) -> str:
    """'0.09x'; small ratios keep two significant digits ('0.0034x')."""
    if ratio is None:
        return "-"
    return f"{ratio:.2f}x" if ratio >= 0.1 else f"{ratio:.2g}x"


def _control_notes(runs: list[RunSummary]) -> list[Block]:
    """What the control rows, seeds and intervals are, and the final stage against both teachers."""
    notes: list[Block] = []
    for run in runs:
        prefix = f"{run.name}: " if len(runs) > 1 else ""
        lines = [f"{prefix}control {row.stage}: {row.note}." for row in run.controls if row.note]
        lines += [f"{prefix}control {name}: {why}." for name, why in run.extras.get("skipped", {}).items()]
        seeds = run.extras.get("seeds", {}).get("seeds", [])
        if len(seeds) > 1:
            lines.append(
                f"{prefix}student rows (and the scratch control) ran with {len(seeds)} training seeds "
                f"({', '.join(map(str, seeds))}), the teacher fixed: quality is mean ± std over the seeds; "
                f"timings, parameters and the NDCG@10 intervals are of seed {seeds[0]}'s run."
            )
        paired = run.extras.get("paired")
        if paired:
            lines.append(
                f"{prefix}ΔNDCG@10 vs teacher: the row minus the teacher on the same {paired['users']:,} test users, "
                "mean and 95% paired-bootstrap interval (2,000 resamples over users, seed 0)."
            )
            lines += [prefix + line for line in _what_the_stack_buys(paired, run.extras.get("training") or {})]
        onnx = next((row for row in run.controls if row.stage == "teacher-onnx" and row.bench), None)
        final = run.final
        if onnx is not None and final.onnx_ratios and "latency_p50_ms" in final.ratios:
            lines.append(
                f"{prefix}final stage ({final.stage}) against the teacher in PyTorch: p50 "
                f"{_times(final.ratios['latency_p50_ms'])}, throughput {_times(final.ratios['throughput_seq_per_s'])}; "
                f"against the teacher in ONNX fp32 ({onnx.bench['engine']}, same session): p50 "
                f"{_times(final.onnx_ratios['latency_p50_ms'])}, "
                f"throughput {_times(final.onnx_ratios['throughput_seq_per_s'])}."
            )
        notes += [Text(line) for line in lines]
    return notes


CONTROLS_VERSUS = (("scratch", "final_vs_scratch"), ("scratch-converged", "final_vs_scratch_converged"))


def _what_the_stack_buys(paired: dict, training: dict) -> list[str]:
    """The final stage against each scratch control: its NDCG@10 difference (paired bootstrap), the
    training each took, and what the stack buys against it: accuracy, training time, both or neither."""
    lines = []
    student = training.get("student")
    for name, key in CONTROLS_VERSUS:
        versus = paired.get(key)
        if not versus:
            continue
        control = training.get(name)
        accuracy = versus["low"] > 0  # the interval of final minus control lies above 0
        cost, faster = "", None
        if student and control:
            best = f" (best {control['best_epoch']})" if "best_epoch" in control else ""
            cost = (f"; training: the student's {' + '.join(student['stages'])} {_epochs(student)} in "
                    f"{_seconds(student['train_seconds'])} (after the teacher's own training), the control "
                    f"{_epochs(control)}{best} in {_seconds(control['train_seconds'])}")
            faster = student["train_seconds"] < control["train_seconds"]
        if accuracy:
            verdict = "accuracy and training time" if faster else "accuracy"
        elif faster:
            verdict = "training time, not accuracy"
        else:
            verdict = "neither accuracy nor training time" if faster is False else "no accuracy"
        if versus["high"] < 0:
            verdict += " (the control is more accurate)"
        lines.append(f"final stage ({versus['stage']}) minus the {name} control: {describe(versus)}{cost}. "
                     f"Against {name} the stack buys {verdict}.")
    return lines


def _epochs(training: dict) -> str:
    return f"{training['epochs_run']} epoch" + ("" if training["epochs_run"] == 1 else "s")


def _seconds(seconds: float) -> str:
    return f"{seconds:,.0f} s" if seconds >= 10 else f"{seconds:.2g} s"


MODEL_FILE_NOTE = (
    "size (all files): the stage's artifact folder (an export also holds step.onnx, the append-one-event "
    "model, and metadata.json with the item ids). scoring model file: model.onnx or model.safetensors alone, "
    "the file that scores a history; its ratio is to the teacher's model.safetensors, like with like."
)


def _users_of(row: StageRow, runs: list[RunSummary]) -> int:
    run = next((run for run in runs if row in run.rows or row in run.controls), None)
    return count_test_users(run.manifest) if run is not None else 0


def _small_data_notes(runs: list[RunSummary]) -> list[Block]:
    """A warning when a run's teacher is within noise of the popularity baseline, and what a small test set
    can resolve (its NDCG@10 noise and the hits column)."""
    notes: list[Block] = []
    for run in runs:
        prefix = f"{run.name}: " if len(runs) > 1 else ""
        warning = popularity_warning(run.manifest)
        if warning:
            notes.append(Text(f"Warning: {prefix}{warning}"))
        users = count_test_users(run.manifest)
        if 0 < users < SMALL_TEST and run.rows:
            teacher = run.rows[0].values["ndcg@10"]
            notes.append(Text(
                f"{prefix}a small test set: {users:,} users, so a stage's NDCG@10 is known to about "
                f"±{half_width(teacher, users):.4f} (95%, at the teacher's level) and ratios to the teacher can "
                f"swing with a few users. The hits@10 column counts test users whose target is in the top 10, "
                f"with the difference to the teacher's count: read a difference of a few hits as noise."
            ))
    return notes


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
        key_value_table({**environment, **{f"version {k}": v for k, v in {
            **manifest["versions"], **run.peer_record.get("versions", {})}.items()}}, "what"),
    ]

"""Report tables: per-stage quality and cost, benchmark details, ablation variants.

A cell shows a stage's number and, in parentheses, its ratio to the run's teacher
(`stage / teacher`: latency 0.50x is twice as fast, throughput 2.00x twice as many sequences).
A timed ratio divides by the teacher's number of the same bench session and rounds, shown in the
row's "teacher ..., same rounds" columns, so every ratio can be recomputed from its row.
"""

from __future__ import annotations

from typing import Any, Callable

from compress.runs.files import human_bytes
from compress.report.collect import RunSummary, StageRow
from compress.report.document import Table
from compress.evaluation.bootstrap import describe, excludes_zero
from compress.report.noise import SMALL_TEST, count_test_users, hits_cell, latency_noise

Formatter = Callable[[float], str]


# column title, value key, formatter: the headline columns of every table
HEADLINE: list[tuple[str, str, Formatter]] = [
    ("NDCG@10", "ndcg@10", lambda v: f"{v:.4f}"),
    ("HR@10", "hr@10", lambda v: f"{v:.4f}"),
    ("MRR@10", "mrr@10", lambda v: f"{v:.4f}"),
    ("params", "params", lambda v: f"{v:,.0f}"),
    ("size (all files)", "size_bytes", human_bytes),
    ("latency p50 (ms, batch 1)", "latency_p50_ms", lambda v: f"{v:.2f}"),
    ("throughput (seq/s)", "throughput_seq_per_s", lambda v: f"{v:,.0f}"),
]

# the teacher's timing in each row's own bench rounds: what the row's timed ratios divide by
TEACHER_COLUMNS: list[tuple[str, str, Formatter]] = [
    ("teacher p50 (ms), same rounds", "teacher latency_p50_ms", lambda v: f"{v:.2f}"),
    ("teacher seq/s, same rounds", "teacher throughput_seq_per_s", lambda v: f"{v:,.0f}"),
]

# the physical-limit columns, shown when a stage's bench counted its FLOPs (compress/models/flops.py)
PHYSICAL_COLUMNS: list[tuple[str, str, Formatter]] = [
    ("GFLOP/seq", "flops_per_sequence", lambda v: f"{v / 1e9:.3g}"),
    ("GFLOP/s, batch 1", "gflops_batch1", lambda v: f"{v:.1f}"),
    ("GFLOP/s, throughput batch", "gflops_throughput", lambda v: f"{v:.1f}"),
]


def cell(row: StageRow, key: str, fmt: Formatter) -> str:
    """'0.1234 (0.98x)', or '-' when the stage has no such number (e.g. never benchmarked).

    A row run under several training seeds shows its mean ± std, the ratio of the mean."""
    if key not in row.values:
        return "-"
    if row.seeds is not None and key in row.seeds["mean"]:
        mean, std = row.seeds["mean"][key], row.seeds["std"][key]
        ratio = row.ratios.get(key)
        reference = row.values[key] / ratio if ratio else None
        shown = f"{fmt(mean)} ± {fmt(std)}"
        return shown + (f" ({mean / reference:.2f}x)" if reference else "")
    ratio = row.ratios.get(key)
    return fmt(row.values[key]) + (f" ({ratio:.2f}x)" if ratio is not None else "")


MODEL_FILE_COLUMN: tuple[str, str, Formatter] = ("scoring model file", "model_bytes", human_bytes)
HITS = "hits@10"
NOISY = " ~noisy"
NOISE_NOTE = ("~noisy: a batch-1 latency timed in fewer than 3 bench rounds, or whose rounds lie more than 25% "
              "apart (bench.rounds: 3 or more in the recipe, on a quiet machine, gives a usable number).")


def latency_cell(row: StageRow, fmt: Formatter) -> str:
    """The latency cell, marked ~noisy when its bench had fewer than 3 rounds or rounds that disagree."""
    shown = cell(row, "latency_p50_ms", fmt)
    return shown + NOISY if shown != "-" and latency_noise(row.bench) else shown


def teacher_cell(row: StageRow, key: str, fmt: Formatter) -> str:
    """The teacher's number (key 'teacher <name>') of the row's bench rounds, or '-'."""
    value = row.teacher_timing.get(key.removeprefix("teacher "))
    return "-" if value is None else fmt(value)


def difference_cell(row: StageRow) -> str:
    """'+0.0012 [-0.0030, +0.0051]': NDCG@10 minus the teacher's and its 95% paired-bootstrap interval."""
    return describe(row.difference) if row.difference else "-"


def stage_table(runs: list[RunSummary], baseline: bool = True, shared: bool = False) -> Table:
    """One row per stage of every run (plus each run's popularity baseline), then each run's control rows.

    Columns for the NDCG@10 difference to the teacher and the ratios to the ONNX teacher appear when a
    run has them (controls.json). With `shared`, a stage several runs share (same cache id, e.g. one
    teacher behind every ablation variant) is one row, its run column naming the runs that share it.
    """
    with_run = len(runs) > 1
    rows_of = {run.name: [*run.rows, *run.controls] for run in runs}
    every = [row for rows in rows_of.values() for row in rows]
    with_difference = any(row.difference for row in every)
    with_onnx = any(row.onnx_ratios for row in every)
    headline = list(HEADLINE)
    if any("model_bytes" in row.values for row in every):
        headline.insert([key for _, key, _ in headline].index("size_bytes") + 1, MODEL_FILE_COLUMN)
    small = {run.name: count_test_users(run.manifest) for run in runs
             if 0 < count_test_users(run.manifest) < SMALL_TEST}
    if small:
        users = sorted(set(small.values()))
        of = f"{users[0]:,} test users" if len(users) == 1 else "test users"
        headline.insert(1, (f"{HITS} of {of} (vs teacher)", HITS, lambda v: ""))
    if with_difference:
        headline.insert(1, ("ΔNDCG@10 vs teacher [95% CI]", DIFFERENCE, lambda v: ""))
    if any(row.teacher_timing for row in every):
        headline += TEACHER_COLUMNS
    if any("flops_per_sequence" in row.values for row in every):
        headline += PHYSICAL_COLUMNS
    columns = (["run"] if with_run else []) + ["stage"] + [title for title, _, _ in headline]
    columns += ["p50 / ONNX teacher", "seq/s / ONNX teacher"] if with_onnx else []
    owners = _owners(runs) if shared else {}
    shown_keys: set[str] = set()
    shown_baselines: set[str] = set()
    rows = []
    for run in runs:
        if baseline and not (shared and run.manifest["data"]["fingerprint"] in shown_baselines):
            shown_baselines.add(run.manifest["data"]["fingerprint"])
            base = run.manifest["baseline"]["metrics"]
            lead = [_run_label(run.name, owners.get(("baseline", run.manifest["data"]["fingerprint"])), runs)] if with_run else []
            values = {"ndcg@10": f"{base['ndcg@10']:.4f}", "hr@10": f"{base['hr@10']:.4f}", "mrr@10": f"{base['mrr@10']:.4f}"}
            if run.name in small and run.rows:
                values[HITS] = hits_cell(base["hr@10"], run.rows[0].values["hr@10"], small[run.name])
            rows.append(lead + ["popularity"] + [values.get(key, "-") for _, key, _ in headline] + ["-", "-"][: 2 * with_onnx])
        for row in rows_of[run.name]:
            if shared and row.key is not None:
                if row.key in shown_keys:
                    continue
                shown_keys.add(row.key)
            lead = [_run_label(run.name, owners.get(row.key), runs)] if with_run else []
            label = f"{row.stage} (control)" if row in run.controls else row.stage
            cells = [
                difference_cell(row) if key == DIFFERENCE
                else _hits(row, run, small) if key == HITS
                else latency_cell(row, fmt) if key == "latency_p50_ms"
                else teacher_cell(row, key, fmt) if key.startswith("teacher ") else cell(row, key, fmt)
                for _, key, fmt in headline
            ]
            if with_onnx:
                onnx = row.onnx_ratios or {}
                cells += [f"{onnx[k]:.2f}x" if k in onnx else "-" for k in ("latency_p50_ms", "throughput_seq_per_s")]
            rows.append(lead + [label] + cells)
    return Table(columns, rows)


DIFFERENCE = "ndcg@10 difference"


def _hits(row: StageRow, run: RunSummary, small: dict[str, int]) -> str:
    """'13 (-1)': the row's test users with the target in its top 10, and the difference to the teacher's."""
    if run.name not in small or "hr@10" not in row.values:
        return "-"
    teacher = run.rows[0].values.get("hr@10") if run.rows and row is not run.rows[0] else None
    return hits_cell(row.values["hr@10"], teacher, small[run.name])


def _owners(runs: list[RunSummary]) -> dict[Any, list[str]]:
    """Stage cache id (and ("baseline", data fingerprint)) -> the runs that have it."""
    owners: dict[Any, list[str]] = {}
    for run in runs:
        owners.setdefault(("baseline", run.manifest["data"]["fingerprint"]), []).append(run.name)
        for row in run.rows:
            if row.key is not None:
                owners.setdefault(row.key, []).append(run.name)
    return owners


def _run_label(name: str, owners: list[str] | None, runs: list[RunSummary]) -> str:
    if not owners or len(owners) == 1:
        return name
    return "shared by all" if len(owners) == len(runs) else "shared: " + ", ".join(owners)


def bench_table(runs: list[RunSummary], shared: bool = False) -> Table:
    """Benchmark details per stage (and control): engine, percentiles, both length modes, memory, session.

    With `shared`, a stage shared by several runs (same cache id) is listed once."""
    with_run = len(runs) > 1
    columns = (["run"] if with_run else []) + [
        "stage", "engine", "device", "p50 / p95 / p99 ms (max len)", "p50 ms per round", "p50 ms (test lengths)",
        "seq/s (max len)", "seq/s (test lengths)", "peak memory added", "session",
    ]
    rows = []
    shown: set[str] = set()
    for run in runs:
        for row in [*run.rows, *run.controls]:
            if row.bench is None or (shared and row.key in shown):
                continue
            if row.key is not None:
                shown.add(row.key)
            b: dict[str, Any] = row.bench
            fixed, real = b["latency_ms"]["fixed"], b["latency_ms"]["realistic"]
            label = f"{row.stage} (control)" if row in run.controls else row.stage
            rows.append(([run.name] if with_run else []) + [
                label, b["engine"], b["device"],
                f"{fixed['p50']:.2f} / {fixed['p95']:.2f} / {fixed['p99']:.2f}",
                " / ".join(f"{p50:.2f}" for p50 in b.get("round_latency_p50_ms") or []) or "-", f"{real['p50']:.2f}",
                f"{b['throughput_seq_per_s']['fixed']:,.0f}", f"{b['throughput_seq_per_s']['realistic']:,.0f}",
                f"{human_bytes(b['memory']['increase_bytes'])} ({b['memory']['kind']})", b["session"],
            ])
    return Table(columns, rows)


def incremental_table(runs: list[RunSummary]) -> Table | None:
    """Per-event serving cost of stages with a step model (bench.json `incremental`); None if none has one."""
    from compress.bench.incremental import ROW_COLUMNS, incremental_rows

    with_run = len(runs) > 1
    rows = [
        ([run.name] if with_run else []) + [row.stage] + cells
        for run in runs for row in run.rows if row.bench and "incremental" in row.bench
        for cells in incremental_rows(row.bench["incremental"])
    ]
    return Table((["run"] if with_run else []) + ["stage"] + ROW_COLUMNS, rows) if rows else None


def latency_range(row: StageRow) -> tuple[float, float] | None:
    """(lowest, highest) batch-1 p50 over the bench rounds of a row, when it was measured in rounds."""
    rounds = (row.bench or {}).get("round_latency_p50_ms")
    return (min(rounds), max(rounds)) if rounds else None


def latency_versus(row: StageRow, reference: StageRow) -> str:
    """How `row`'s batch-1 p50 compares with `reference`'s: '≈ (within noise)' when their per-round
    ranges overlap, else the relative difference of the medians."""
    if "latency_p50_ms" not in row.values or "latency_p50_ms" not in reference.values:
        return "-"
    if row is reference:
        return "reference"
    change = row.values["latency_p50_ms"] / reference.values["latency_p50_ms"] - 1
    mine, theirs = latency_range(row), latency_range(reference)
    if mine is None or theirs is None:
        return f"{change:+.0%} (noise not measured)"
    if mine[0] <= theirs[1] and theirs[0] <= mine[1]:
        return f"≈ ({change:+.0%}, within noise)"
    return f"{change:+.0%}"


def variant_table(
    runs: list[RunSummary], variants: list[tuple[str, str]], differences: dict[str, dict | None] | None = None
) -> Table:
    """Ablation: one row per variant, its final stage, ratios to that variant's own teacher.

    The first variant is the reference: each other variant's NDCG@10 difference to it (paired bootstrap
    over test users, 95% interval; `differences`) and its batch-1 p50 against it, marked within noise when
    their per-round p50 ranges overlap. A latency cell shows [lowest-highest] p50 over the rounds."""
    reference_name, reference = variants[0][0], runs[0].final
    columns = ["#", "variant", "changes", "final stage", "NDCG@10", f"ΔNDCG@10 vs {reference_name} [95% CI]",
               "HR@10", "MRR@10", "params", "size", "latency p50 (ms, batch 1) [round range]",
               f"p50 vs {reference_name}", "throughput (seq/s)", "its teacher: p50 ms / seq/s, same rounds"]
    fmt = {key: f for _, key, f in HEADLINE}
    rows = []
    for number, (run, (name, changes)) in enumerate(zip(runs, variants), start=1):
        row = run.final
        difference = (differences or {}).get(name)
        if name == reference_name:
            shown_difference = "reference"
        else:
            shown_difference = describe(difference) + (" *" if excludes_zero(difference) else "") if difference else "-"
        spread = latency_range(row)
        latency = cell(row, "latency_p50_ms", fmt["latency_p50_ms"])
        latency += f" [{spread[0]:.2f}-{spread[1]:.2f}]" if spread else ""
        latency += NOISY if latency != "-" and latency_noise(row.bench) else ""
        rows.append([
            str(number), name, changes or "(the recipe as is)", row.stage, cell(row, "ndcg@10", fmt["ndcg@10"]),
            shown_difference, cell(row, "hr@10", fmt["hr@10"]), cell(row, "mrr@10", fmt["mrr@10"]),
            cell(row, "params", fmt["params"]), cell(row, "size_bytes", fmt["size_bytes"]), latency,
            latency_versus(row, reference), cell(row, "throughput_seq_per_s", fmt["throughput_seq_per_s"]),
            " / ".join(teacher_cell(row, key, f) for _, key, f in TEACHER_COLUMNS),
        ])
    return Table(columns, rows)


def peers_table(runs: list[RunSummary]) -> Table | None:
    """The peers of each run's teacher (peers.json): quality with its interval against the teacher, size and
    speed with their ratios to the teacher of the same bench rounds; None when no run has peers."""
    columns = [HEADLINE[0], *HEADLINE[3:]]
    header = ["peer", "engine", "ΔNDCG@10 vs teacher", *(title for title, _, _ in columns),
              *(title for title, _, _ in TEACHER_COLUMNS)]
    rows = []
    for run in runs:
        for row in run.peers:
            rows.append([
                row.stage if len(runs) == 1 else f"{run.name}: {row.stage}",
                (row.bench or {}).get("engine", "-"), difference_cell(row),
                *(latency_cell(row, fmt) if key == "latency_p50_ms" else cell(row, key, fmt) for _, key, fmt in columns),
                *(teacher_cell(row, key, fmt) for _, key, fmt in TEACHER_COLUMNS),
            ])
    return Table(header, rows) if rows else None


def key_value_table(items: dict[str, Any], key: str = "key", value: str = "value") -> Table:
    return Table([key, value], [[str(k), str(v)] for k, v in items.items()])

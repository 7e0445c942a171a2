"""Report tables: per-stage quality and cost, benchmark details, ablation variants.

A cell shows a stage's number and, in parentheses, its ratio to the run's teacher
(`stage / teacher`: latency 0.50x is twice as fast, throughput 2.00x twice as many sequences).
"""

from __future__ import annotations

from typing import Any, Callable

from compress.runs.artifacts import human_bytes
from compress.report.collect import RunSummary, StageRow
from compress.report.document import Table

Formatter = Callable[[float], str]


# column title, value key, formatter: the headline columns of every table
HEADLINE: list[tuple[str, str, Formatter]] = [
    ("NDCG@10", "ndcg@10", lambda v: f"{v:.4f}"),
    ("HR@10", "hr@10", lambda v: f"{v:.4f}"),
    ("MRR@10", "mrr@10", lambda v: f"{v:.4f}"),
    ("params", "params", lambda v: f"{v:,.0f}"),
    ("size", "size_bytes", human_bytes),
    ("latency p50 (ms, batch 1)", "latency_p50_ms", lambda v: f"{v:.2f}"),
    ("throughput (seq/s)", "throughput_seq_per_s", lambda v: f"{v:,.0f}"),
]


def cell(row: StageRow, key: str, fmt: Formatter) -> str:
    """'0.1234 (0.98x)', or '-' when the stage has no such number (e.g. never benchmarked)."""
    if key not in row.values:
        return "-"
    ratio = row.ratios.get(key)
    return fmt(row.values[key]) + (f" ({ratio:.2f}x)" if ratio is not None else "")


def stage_table(runs: list[RunSummary], baseline: bool = True) -> Table:
    """One row per stage of every run (plus each run's popularity baseline)."""
    with_run = len(runs) > 1
    columns = (["run"] if with_run else []) + ["stage"] + [title for title, _, _ in HEADLINE]
    rows = []
    for run in runs:
        lead = [run.name] if with_run else []
        if baseline:
            base = run.manifest["baseline"]["metrics"]
            rows.append(lead + ["popularity"] + [f"{base[k]:.4f}" for k in ("ndcg@10", "hr@10", "mrr@10")]
                        + ["-"] * (len(HEADLINE) - 3))
        rows += [lead + [row.stage] + [cell(row, key, fmt) for _, key, fmt in HEADLINE] for row in run.rows]
    return Table(columns, rows)


def bench_table(runs: list[RunSummary]) -> Table:
    """Benchmark details per stage: engine, percentiles, both length modes, memory, session."""
    with_run = len(runs) > 1
    columns = (["run"] if with_run else []) + [
        "stage", "engine", "device", "p50 / p95 / p99 ms (max len)", "p50 ms (test lengths)",
        "seq/s (max len)", "seq/s (test lengths)", "peak memory added", "session",
    ]
    rows = []
    for run in runs:
        for row in run.rows:
            if row.bench is None:
                continue
            b: dict[str, Any] = row.bench
            fixed, real = b["latency_ms"]["fixed"], b["latency_ms"]["realistic"]
            rows.append(([run.name] if with_run else []) + [
                row.stage, b["engine"], b["device"],
                f"{fixed['p50']:.2f} / {fixed['p95']:.2f} / {fixed['p99']:.2f}", f"{real['p50']:.2f}",
                f"{b['throughput_seq_per_s']['fixed']:,.0f}", f"{b['throughput_seq_per_s']['realistic']:,.0f}",
                f"{human_bytes(b['memory']['increase_bytes'])} ({b['memory']['kind']})", b["session"],
            ])
    return Table(columns, rows)


def incremental_table(runs: list[RunSummary]) -> Table | None:
    """Per-event serving cost of stages with a step model (bench.json `incremental`); None if none has one."""
    from compress.bench_incremental import ROW_COLUMNS, incremental_rows

    with_run = len(runs) > 1
    rows = [
        ([run.name] if with_run else []) + [row.stage] + cells
        for run in runs for row in run.rows if row.bench and "incremental" in row.bench
        for cells in incremental_rows(row.bench["incremental"])
    ]
    return Table((["run"] if with_run else []) + ["stage"] + ROW_COLUMNS, rows) if rows else None


def variant_table(runs: list[RunSummary], variants: list[tuple[str, str]]) -> Table:
    """Ablation: one row per variant, its final stage, ratios to that variant's own teacher."""
    columns = ["variant", "changes", "final stage"] + [title for title, _, _ in HEADLINE]
    rows = [
        [name, changes or "(the recipe as is)", run.final.stage] + [cell(run.final, key, fmt) for _, key, fmt in HEADLINE]
        for run, (name, changes) in zip(runs, variants)
    ]
    return Table(columns, rows)


def key_value_table(items: dict[str, Any], key: str = "key", value: str = "value") -> Table:
    return Table([key, value], [[str(k), str(v)] for k, v in items.items()])

"""The search's report page: the frontier table, the pick, the Pareto plot (all candidates, frontier
ringed, the budget line) and the performance-law fit, as Markdown + self-contained HTML."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from compress.report.document import Block, Code, Heading, Image, Table, Text, to_html, to_markdown
from compress.report.plots import pyplot, save_png
from compress.runs.files import atomic_write, human_bytes
from compress.search.frontier import LABELS, base_line, objective_value, unique
from compress.search.law import LawFit, fit_law
from compress.search.spec import SearchSpec

COLUMNS = ["candidate", "values", "params", "size", "p50 ms", "p50 vs teacher", "seq/s", "valid NDCG@10", "drop (CI upper)", "test NDCG@10", "passes"]


def frontier_rows(records: list[dict[str, Any]]) -> list[list[str]]:
    """One row per record: what a reader compares (also the CLI's table)."""
    def number(value: Any, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    return [[
        r["candidate"],
        "; ".join(f"{k}={json.dumps(v)}" for k, v in r["params"].items()),
        f"{r['params_count']:,}",
        human_bytes(r["size_bytes"]),
        number(r["latency_p50_ms"], ".2f"),
        number(r.get("latency_p50_vs_teacher"), ".2f") + ("x" if r.get("latency_p50_vs_teacher") is not None else ""),
        number(r["throughput_seq_per_s"], ",.0f"),
        f"{r['valid_ndcg@10']:.4f}",
        f"{r['ndcg_drop']['mean']:+.4f} ({r['ndcg_drop']['ci_high']:+.4f})",
        f"{r['test_ndcg@10']:.4f}",
        "yes" if r["passed"] else "no",
    ] for r in records]


def bench_sessions_note(records: list[dict[str, Any]]) -> str | None:
    """A warning when the candidates' benches come from several sessions (a cached candidate keeps the
    bench of the run that made it): absolute p50 and seq/s then carry each session's load."""
    sessions = {r["bench_session"] for r in records if r.get("bench_session")}
    if len(sessions) < 2:
        return None
    settled = " The frontier and the passing candidates were re-timed together at the end (settled.json): " \
        "their numbers compare with each other as they stand." if any(r.get("settled") for r in records) else ""
    return (f"The p50 and seq/s columns come from {len(sessions)} bench sessions (a cached candidate keeps the "
            f"bench of the run that made it), so they carry each session's machine load. The p50-vs-teacher "
            f"column is measured against the teacher re-timed in the same session: compare that one.{settled}")


def plot_pareto(records: list[dict[str, Any]], summary: dict[str, Any], objective: str, path: Path) -> Path:
    """Validation NDCG@10 against the objective: every candidate (pass / fail), the frontier ringed, the budget line."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.6, 4.4), dpi=110)
    for passed, colour, label in ((True, "#55a868", "passes"), (False, "#c44e52", "misses a constraint")):
        group = [r for r in records if r["passed"] == passed]
        if group:
            ax.scatter([objective_value(r, objective) for r in group], [r["valid_ndcg@10"] for r in group],
                       color=colour, label=label, zorder=3)
    front = summary["frontier"]
    ax.plot([objective_value(r, objective) for r in front], [r["valid_ndcg@10"] for r in front], "--",
            color="#dd8452", zorder=2)
    ax.scatter([objective_value(r, objective) for r in front], [r["valid_ndcg@10"] for r in front], s=160,
               facecolors="none", edgecolors="#dd8452", zorder=4, label="Pareto frontier")
    teacher = records[0]["teacher_valid_ndcg@10"]
    ax.axhline(teacher, color="#4c72b0", lw=1, label="teacher")
    ax.axhline(teacher - records[0]["drop_budget"], color="#4c72b0", lw=1, ls=":", label="budget (mean drop)")
    if summary["chosen"]:
        chosen = summary["chosen"]
        ax.annotate("chosen", (objective_value(chosen, objective), chosen["valid_ndcg@10"]), textcoords="offset points",
                    xytext=(6, -12), fontsize=8)
    ax.set_xlabel(LABELS[objective])
    ax.set_ylabel("NDCG@10 (validation, full ranking)")
    ax.set_title(f"{len(records)} candidates")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return save_png(plt, fig, path)


def plot_law(records: list[dict[str, Any]], fit: LawFit, path: Path) -> Path:
    plt = pyplot()
    params = np.array([r["student_params"] for r in records], dtype=np.float64)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    ax.scatter(params, [r["valid_ndcg@10"] for r in records], color="#4c72b0", zorder=3, label="candidates")
    grid = np.linspace(params.min(), params.max(), 200)
    ax.plot(grid, fit.predict(grid), color="#dd8452", label=f"performance law, R² {fit.r2:.2f}")
    ax.set_xlabel("student parameters")
    ax.set_ylabel("NDCG@10 (validation)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_png(plt, fig, path)


def write_report(out: Path, spec: SearchSpec, summary: dict[str, Any], records: list[dict[str, Any]]) -> Path:
    """report.md, report.html and the PNGs in `out`; returns the Markdown path."""
    out.mkdir(parents=True, exist_ok=True)
    candidates = unique(records)
    title = f"compress search: {spec.name}"
    blocks: list[Block] = [Heading(title, 1), Text(_overview(spec, summary))]
    note = bench_sessions_note(candidates)
    if note:
        blocks.append(Text(note))
    if summary["chosen"]:
        chosen = summary["chosen"]
        blocks += [Heading("Chosen"), Text(f"{chosen['candidate']}: {chosen['why']}. Test NDCG@10 "
                                           f"{chosen['test_ndcg@10']:.4f} (teacher {chosen['teacher_test_ndcg@10']:.4f}).")]
    else:
        blocks += [Heading("No candidate passes"), Table(["candidate", "misses"],
                                                         [[r["candidate"], r["misses_by"]] for r in summary["closest"]])]
        if summary.get("hint"):
            blocks.append(Text(f"Why: {summary['hint']}."))
    base = base_line(summary)
    if base:
        blocks.append(Text(base[0].upper() + base[1:] + "."))
    blocks += [
        Heading("Frontier"), Table(COLUMNS, frontier_rows(summary["frontier"])),
        Image(plot_pareto(candidates, summary, spec.objective, out / "pareto.png"),
              "Validation NDCG@10 against the objective, every candidate; the frontier ringed; "
              "the dotted line is the teacher minus the budget (the gate itself uses the CI's upper end)."),
    ]
    fit = fit_law(np.array([r["student_params"] for r in candidates]), np.array([r["valid_ndcg@10"] for r in candidates]))
    blocks.append(Heading("Performance law"))
    if fit is None:
        blocks.append(Text("Fewer than 4 distinct student sizes: no fit."))
    else:
        blocks += [
            Text(f"NDCG@10 = w·(−1/(c·N^a) − a·ln N) + b over N = student parameters / {fit.scale:,.0f} "
                 f"(Shen et al., arXiv 2412.00430): w={fit.w:.4g}, a={fit.a:.4g}, c={fit.c:.4g}, b={fit.b:.4g}, "
                 f"R² {fit.r2:.3f} on {fit.points} candidates. Descriptive only: the search does not skip by it."),
            Image(plot_law(candidates, fit, out / "law.png"), "Validation NDCG@10 against student parameters, law fitted."),
        ]
    blocks += [Heading("All candidates"), Table(COLUMNS, frontier_rows(candidates)),
               Heading("Spec"), Code(json.dumps(spec.model_dump(mode="json"), indent=2), "json")]
    markdown = out / "report.md"
    atomic_write(markdown, lambda tmp: tmp.write_text(to_markdown(blocks)))
    atomic_write(out / "report.html", lambda tmp: tmp.write_text(to_html(blocks, title)))
    return markdown


def _overview(spec: SearchSpec, summary: dict[str, Any]) -> str:
    c = spec.constraints
    budget = f"{c.max_ndcg_drop:.1%} of the teacher's" if c.drop == "relative" else f"{c.max_ndcg_drop:g} (absolute)"
    extra = "".join([f", size <= {c.max_size_mb:g} MiB" if c.max_size_mb else "",
                     f", p99 <= {c.max_p99_ms:g} ms" if c.max_p99_ms else ""])
    return (f"{summary['trials']} trials, {summary['candidates']} distinct candidates, {summary['passing']} pass. "
            f"Objective: {LABELS[spec.objective]}. Constraint: NDCG@10 drop vs the teacher on validation at most "
            f"{budget} at the upper end of the paired-bootstrap {spec.bootstrap.confidence:.0%} CI{extra}. "
            "Decided on validation; test metrics are reported beside.")

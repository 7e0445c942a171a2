"""Report plots (matplotlib, imported lazily, Agg backend): quality vs latency with the Pareto front,
size and latency per stage, and the ablation comparison."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compress.report.collect import StageRow


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the (latency, quality) points no other point dominates, by increasing latency.

    A point is dominated when another has latency <= and quality >=, one of them strictly.
    """
    front = [
        i
        for i, (x, y) in enumerate(points)
        if not any(x2 <= x and y2 >= y and (x2 < x or y2 > y) for x2, y2 in points)
    ]
    return sorted(front, key=lambda i: points[i][0])


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _label(row: StageRow, with_run: bool) -> str:
    return f"{row.run}/{row.stage}" if with_run else row.stage


def plot_quality_latency(rows: list[StageRow], path: Path, with_run: bool = False) -> Path:
    """NDCG@10 against batch-1 p50 latency, one point per stage, the Pareto front drawn and ringed."""
    plt = _pyplot()
    timed = [row for row in rows if "latency_p50_ms" in row.values]
    points = [(row.values["latency_p50_ms"], row.values["ndcg@10"]) for row in timed]
    front = pareto_front(points)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    ax.scatter([p[0] for p in points], [p[1] for p in points], color="#4c72b0", zorder=3)
    for row, (x, y) in zip(timed, points):
        ax.annotate(_label(row, with_run), (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    if front:
        ax.plot([points[i][0] for i in front], [points[i][1] for i in front], "--", color="#dd8452", zorder=2,
                label="Pareto front")
        ax.scatter([points[i][0] for i in front], [points[i][1] for i in front], s=140, facecolors="none",
                   edgecolors="#dd8452", zorder=4)
        ax.legend(loc="lower right", fontsize=8)
    ax.margins(x=0.2, y=0.15)  # room for the labels
    ax.set_xlabel("batch-1 latency p50 (ms, max length)")
    ax.set_ylabel("NDCG@10 (test, full ranking)")
    ax.set_title("Quality vs latency")
    ax.grid(alpha=0.3)
    return _save(plt, fig, path)


def plot_cost_per_stage(rows: list[StageRow], path: Path, with_run: bool = False) -> Path:
    """Size on disk and batch-1 latency per stage, side by side."""
    plt = _pyplot()
    labels = [_label(row, with_run) for row in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.8), dpi=110)
    _bars(left, labels, [row.values["size_bytes"] / 2**20 for row in rows], "Size on disk", "MiB")
    _bars(right, labels, [row.values.get("latency_p50_ms", 0.0) for row in rows], "Batch-1 latency p50", "ms")
    return _save(plt, fig, path)


def plot_variants(rows: list[StageRow], names: list[str], path: Path) -> Path:
    """Ablation: each variant's final stage, NDCG@10 and batch-1 latency."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.8), dpi=110)
    _bars(left, names, [row.values["ndcg@10"] for row in rows], "NDCG@10 (final stage)", "NDCG@10")
    _bars(right, names, [row.values.get("latency_p50_ms", 0.0) for row in rows], "Batch-1 latency p50", "ms")
    return _save(plt, fig, path)


def _bars(ax: Any, labels: list[str], values: list[float], title: str, unit: str) -> None:
    ax.bar(range(len(values)), values, color="#4c72b0")
    ax.set_xticks(range(len(values)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_title(title)
    ax.set_ylabel(unit)
    ax.grid(axis="y", alpha=0.3)


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path

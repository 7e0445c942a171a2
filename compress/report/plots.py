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


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend (no screen needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _label(row: StageRow, with_run: bool) -> str:
    return f"{row.run}/{row.stage}" if with_run else row.stage


def near_groups(points: list[tuple[float, float]], radius: float = 0.04) -> list[list[int]]:
    """Indices of points grouped when they lie within `radius` of a group's first point, distances
    measured as fractions of the points' x and y spans (so one label serves points drawn on top of each other)."""
    if not points:
        return []
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x_span, y_span = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    groups: list[list[int]] = []
    for index, (x, y) in enumerate(points):
        for group in groups:
            gx, gy = points[group[0]]
            if ((x - gx) / x_span) ** 2 + ((y - gy) / y_span) ** 2 <= radius**2:
                group.append(index)
                break
        else:
            groups.append([index])
    return groups


def plot_quality_latency(
    rows: list[StageRow], path: Path, with_run: bool = False, labels: list[str] | None = None,
    baseline: float | None = None, users: list[int] | None = None,
) -> Path:
    """NDCG@10 against batch-1 p50 latency, one numbered point per stage (a key beside the plot names
    them; points drawn on top of each other share one label), the Pareto front drawn and ringed.

    The y-axis starts at 0, so a difference looks as large as it is; `baseline` (the popularity NDCG@10)
    is a dotted line; with `users` (test users per row) each point has whiskers of its approximate 95%
    interval (compress/report/noise.py)."""
    from compress.report.noise import half_width

    plt = pyplot()
    names = labels or [_label(row, with_run) for row in rows]
    timed = [(row, name) for row, name in zip(rows, names) if "latency_p50_ms" in row.values]
    points = [(row.values["latency_p50_ms"], row.values["ndcg@10"]) for row, _ in timed]
    front = pareto_front(points)
    fig, ax = plt.subplots(figsize=(8.8, 4.4), dpi=110)
    ax.scatter([p[0] for p in points], [p[1] for p in points], color="#4c72b0", zorder=3)
    for group in near_groups(points):
        ax.annotate(",".join(str(i + 1) for i in group), points[group[0]], textcoords="offset points",
                    xytext=(6, 5), fontsize=8, fontweight="bold")
    if front:
        ax.plot([points[i][0] for i in front], [points[i][1] for i in front], "--", color="#dd8452", zorder=2,
                label="Pareto front")
        ax.scatter([points[i][0] for i in front], [points[i][1] for i in front], s=140, facecolors="none",
                   edgecolors="#dd8452", zorder=4)
    if baseline is not None:
        ax.axhline(baseline, linestyle=":", color="#55a868", zorder=1, label=f"popularity baseline ({baseline:.4f})")
    widths = []
    if users is not None:
        counts = [count for row, count in zip(rows, users) if "latency_p50_ms" in row.values]
        widths = [half_width(p[1], n) if n else 0.0 for p, n in zip(points, counts)]
        if any(widths):
            ax.errorbar([p[0] for p in points], [p[1] for p in points], yerr=widths, fmt="none", ecolor="#4c72b0",
                        elinewidth=1, capsize=3, zorder=2)
    if front or baseline is not None:
        ax.legend(loc="lower right", fontsize=8)
    highest = max([p[1] + w for p, w in zip(points, widths or [0.0] * len(points))] + [baseline or 0.0] + [0.0])
    key = [f"{i + 1:>2}  {_short(name)}" for i, (_, name) in enumerate(timed)]
    fig.text(0.70, 0.93, "\n".join(key), va="top", ha="left", fontsize=7.5, family="monospace")
    ax.margins(x=0.15, y=0.15)
    if highest > 0:
        ax.set_ylim(0, min(1.0, highest * 1.15))  # from 0: a difference is drawn as large as it is
    xs = [p[0] for p in points if p[0] > 0]
    if xs and max(xs) / min(xs) > 20:  # e.g. onnxruntime beside PyTorch eager: a log axis keeps both readable
        ax.set_xscale("log")
    ax.set_xlabel("batch-1 latency p50 (ms, max length)")
    ax.set_ylabel("NDCG@10 (test, full ranking)")
    ax.set_title("Quality vs latency")
    ax.grid(alpha=0.3)
    fig.tight_layout(rect=(0, 0, 0.68, 1))
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def _short(text: str, width: int = 34) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def plot_cost_per_stage(rows: list[StageRow], path: Path, with_run: bool = False) -> Path:
    """Size on disk and batch-1 latency per stage, side by side."""
    plt = pyplot()
    labels = [_label(row, with_run) for row in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.8), dpi=110)
    _bars(left, labels, [row.values["size_bytes"] / 2**20 for row in rows], "Size on disk", "MiB")
    _bars(right, labels, [row.values.get("latency_p50_ms", 0.0) for row in rows], "Batch-1 latency p50", "ms")
    return save_png(plt, fig, path)


def plot_variants(
    rows: list[StageRow], names: list[str], path: Path, differences: dict[str, dict | None] | None = None
) -> Path:
    """Ablation: each variant's final stage, NDCG@10 (whiskers: the 95% interval of its difference to
    the first variant, placed on its bar) and batch-1 latency (bars: the median over bench rounds,
    whiskers: the lowest and highest round)."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.8), dpi=110)
    ndcg = [row.values["ndcg@10"] for row in rows]
    _bars(left, names, ndcg, "NDCG@10 (whiskers: 95% CI vs the first)", "NDCG@10")
    intervals = [(differences or {}).get(name) for name in names]
    if any(intervals):
        low = [d["mean"] - d["low"] if d else 0.0 for d in intervals]
        high = [d["high"] - d["mean"] if d else 0.0 for d in intervals]
        left.errorbar(range(len(rows)), ndcg, yerr=[low, high], fmt="none", ecolor="#333", capsize=3)
    latency = [row.values.get("latency_p50_ms", 0.0) for row in rows]
    _bars(right, names, latency, "Batch-1 latency p50 (round range)", "ms")
    rounds = [(row.bench or {}).get("round_latency_p50_ms") for row in rows]
    if all(rounds):
        low = [value - min(r) for value, r in zip(latency, rounds)]
        high = [max(r) - value for value, r in zip(latency, rounds)]
        right.errorbar(range(len(rows)), latency, yerr=[low, high], fmt="none", ecolor="#333", capsize=3)
    return save_png(plt, fig, path)


def _bars(ax: Any, labels: list[str], values: list[float], title: str, unit: str) -> None:
    ax.bar(range(len(values)), values, color="#4c72b0")
    ax.set_xticks(range(len(values)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_title(title)
    ax.set_ylabel(unit)
    ax.grid(axis="y", alpha=0.3)


def save_png(plt: Any, fig: Any, path: Path) -> Path:
    """Write `fig` to `path` as a PNG and close it."""
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path

"""From trial records to the answer: the Pareto frontier, the pick (and why), or the closest misses.

A record is one finished candidate (see runner.py): its values, cost (bytes, p50, p99,
throughput), validation NDCG@10 with the bootstrap CI of its drop vs the teacher, test NDCG@10,
and by how much it misses each constraint. The frontier is the set no other candidate beats on
both the objective and validation NDCG@10; the pick is the best objective among candidates that
pass every constraint; with none passing, the `closest` smallest misses are returned instead.
"""

from __future__ import annotations

from typing import Any

from compress.report.plots import pareto_front
from compress.search.spec import OBJECTIVES

LABELS = {"p50": "batch-1 p50 latency (ms)", "throughput": "batch throughput (seq/s)", "bytes": "size on disk (bytes)"}


def objective_value(record: dict[str, Any], objective: str) -> float:
    return float(record[OBJECTIVES[objective][0]])


def unique(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per candidate (the first trial that ran it), in trial order."""
    seen: dict[str, dict[str, Any]] = {}
    for record in sorted(records, key=lambda r: r["trial"]):
        seen.setdefault(record["candidate"], record)
    return list(seen.values())


def frontier(records: list[dict[str, Any]], objective: str) -> list[dict[str, Any]]:
    """Candidates not dominated on (objective, validation NDCG@10), by increasing cost."""
    sign = -1.0 if OBJECTIVES[objective][1] == "maximize" else 1.0  # pareto_front minimises x
    points = [(sign * objective_value(r, objective), r["valid_ndcg@10"]) for r in records]
    return [records[i] for i in pareto_front(points)]


def choose(records: list[dict[str, Any]], objective: str) -> dict[str, Any] | None:
    """The passing candidate with the best objective (ties: higher validation NDCG@10), or None."""
    passing = [r for r in records if r["passed"]]
    if not passing:
        return None
    sign = -1.0 if OBJECTIVES[objective][1] == "maximize" else 1.0
    return min(passing, key=lambda r: (sign * objective_value(r, objective), -r["valid_ndcg@10"]))


def why(chosen: dict[str, Any], records: list[dict[str, Any]], objective: str) -> str:
    passing = sum(r["passed"] for r in records)
    drop = chosen["ndcg_drop"]
    return (
        f"best {LABELS[objective]} ({objective_value(chosen, objective):,.4g}) of the {passing} of {len(records)} "
        f"candidates that pass; its NDCG@10 drop vs the teacher on validation is {drop['mean']:+.4f} "
        f"(95% CI upper end {drop['ci_high']:+.4f} <= budget {chosen['drop_budget']:.4f})"
    )


def closest(records: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """The `count` candidates missing the constraints by the least (relative to each limit's scale)."""
    return sorted(records, key=lambda r: _miss_score(r))[:count]


def _miss_score(record: dict[str, Any]) -> tuple[float, float]:
    misses = record["misses"]
    ndcg = max(misses.get("ndcg_drop", 0.0), 0.0) / max(record["drop_budget"], 1e-12)
    others = sum(max(v, 0.0) for k, v in misses.items() if k != "ndcg_drop")
    return (ndcg + others, -record["valid_ndcg@10"])


def describe_miss(record: dict[str, Any]) -> str:
    """`ndcg_drop by 0.0123 (CI upper end 0.0323 vs budget 0.0200), size_mb by 0.3`."""
    parts = []
    for key, amount in record["misses"].items():
        if amount <= 0:
            continue
        if key == "ndcg_drop":
            parts.append(f"the NDCG@10 drop budget by {amount:.4f} (CI upper end {record['ndcg_drop']['ci_high']:.4f} "
                         f"vs budget {record['drop_budget']:.4f})")
        else:
            parts.append(f"{key} by {amount:.4g}")
    return ", ".join(parts) or "nothing"


def resolution(records: list[dict[str, Any]]) -> float | None:
    """The median half-width of the candidates' 95% CIs of the NDCG@10 drop: the smallest drop the
    validation users resolve (None without records)."""
    widths = sorted(r["ndcg_drop"]["ci_high"] - r["ndcg_drop"]["mean"] for r in records)
    return widths[len(widths) // 2] if widths else None


def resolution_hint(records: list[dict[str, Any]]) -> str | None:
    """Why nothing can pass when the budget is narrower than the CIs: a candidate passes only if its
    mean drop is at most budget - half-width, i.e. when it beats the teacher on validation."""
    width = resolution(records)
    if width is None or width < records[0]["drop_budget"]:
        return None
    budget = records[0]["drop_budget"]
    return (f"the budget ({budget:.4f}) is no wider than the 95% CI of a drop on these validation users "
            f"(median half-width {width:.4f}): a candidate passes only if its validation NDCG@10 beats the "
            f"teacher's by {width - budget:.4f} or more; a larger budget or more validation users resolves it")


def base_line(summary: dict[str, Any]) -> str | None:
    """The base recipe's own numbers beside the answer (None when the space does not contain it)."""
    base = summary.get("base")
    if base is None:
        return None
    p50 = "-" if base["latency_p50_ms"] is None else f"{base['latency_p50_ms']:.3g} ms"
    verdict = "passes" if base["passed"] else f"misses {describe_miss(base)}"
    return (f"the base recipe itself ({base['candidate']}): batch-1 p50 {p50}, valid NDCG@10 {base['valid_ndcg@10']:.4f}, "
            f"test {base['test_ndcg@10']:.4f}; {verdict}")


def summarise(
    records: list[dict[str, Any]], objective: str, keep_closest: int, base_candidate: str | None = None
) -> dict[str, Any]:
    """frontier.json's content: the frontier, the pick (with why) or the closest misses, counts, and the
    base recipe's own record when the space contains it (`base_candidate`: what the pick is measured against)."""
    candidates = unique(records)
    chosen = choose(candidates, objective)
    out: dict[str, Any] = {
        "objective": objective,
        "trials": len(records),
        "candidates": len(candidates),
        "passing": sum(r["passed"] for r in candidates),
        "frontier": frontier(candidates, objective),
        "chosen": None,
        "closest": [],
        "ci_half_width": resolution(candidates),
        "base": next((r for r in candidates if r["candidate"] == base_candidate), None),
    }
    if chosen is not None:
        out["chosen"] = {**chosen, "why": why(chosen, candidates, objective)}
    elif candidates:
        out["closest"] = [{**r, "misses_by": describe_miss(r)} for r in closest(candidates, keep_closest)]
        out["hint"] = resolution_hint(candidates)
    return out

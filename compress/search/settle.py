"""The last word on speed: the candidates that decide the answer, re-timed together in one bench session.

Each trial benches its candidate when it runs, and a candidate found in the stage cache keeps the
bench of the run that made it, so trial latencies come from different sessions and machine loads
(on the ML-1M search three sessions disagreed by 1.5x on the same teacher). Before the answer is
written, the passing candidates and the frontier are timed again in one interleaved session
(`compress.studies.compare.bench_finals`: every teacher, then every final stage, in each round), and those
numbers replace the trials' in the frontier, the pick and the report. The base recipe, when the
space contains it, is re-timed with them: the pick is then compared with it in the same session.
`settled.json` keeps them. A `max_p99_ms` limit is judged again on the settled p99, and candidates
that miss that limit alone are re-timed too (a slow trial session must not fail them for good).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from compress.recipe import Recipe
from compress.runs.files import read_json, write_json
from compress.runs.layout import MANIFEST_FILE, read_manifest

SETTLED_FILE = "settled.json"
RETIMED_KEYS = ("latency_p50_ms", "latency_p99_ms", "throughput_seq_per_s")


def to_settle(summary: dict[str, Any], records: list[dict[str, Any]]) -> list[str]:
    """The candidates whose speed decides the answer: every passing one, the frontier and the base recipe
    (what the pick is compared with), in trial order."""
    wanted = {r["candidate"] for r in summary["frontier"]} | {r["candidate"] for r in records if r["passed"]}
    wanted |= {r["candidate"] for r in records if _misses_p99_alone(r)}
    if summary.get("base"):
        wanted.add(summary["base"]["candidate"])
    return list(dict.fromkeys(r["candidate"] for r in sorted(records, key=lambda r: r["trial"]) if r["candidate"] in wanted))


def settle(recipe: Recipe, runs: Path, candidates: list[str], log: Callable[[str], None]) -> dict[str, Any] | None:
    """Time the candidates' final stages (and their teacher) in one session; return settled.json's content.
    Candidates run by a worker on another machine have no run folder here: they keep their trial numbers."""
    from compress.studies.compare import bench_finals

    missing = [name for name in candidates if not (runs / name / MANIFEST_FILE).is_file()]
    if missing:
        log(f"not re-timed (run on another machine, no run folder here): {', '.join(missing)}")
    candidates = [name for name in candidates if name not in missing]
    if not candidates:
        return None
    session = bench_finals(recipe, {name: runs / name for name in candidates}, log)
    timed: dict[str, dict[str, Any]] = {}
    for name in candidates:
        bench = read_manifest(runs / name)["stages"][-1]["bench"]
        timed[name] = {key: bench.get(key) for key in RETIMED_KEYS}
        timed[name]["latency_p50_vs_teacher"] = bench["ratios"].get("latency_p50_ms")
        timed[name]["bench_session"] = session
    return {"session": session, "candidates": timed}


def _misses_p99_alone(record: dict[str, Any]) -> bool:
    misses = record.get("misses", {})
    return misses.get("p99_ms", 0) > 0 and all(v <= 0 for k, v in misses.items() if k != "p99_ms")


def apply_settled(
    records: list[dict[str, Any]], settled: dict[str, Any] | None, max_p99_ms: float | None = None
) -> list[dict[str, Any]]:
    """The records with their re-timed numbers where the candidate was settled (marked `settled: true`);
    with a p99 limit, its miss and the verdict are judged again on the settled p99."""
    timed = (settled or {}).get("candidates", {})
    out = []
    for record in records:
        if record["candidate"] not in timed:
            out.append(record)
            continue
        record = {**record, **timed[record["candidate"]], "settled": True}
        if max_p99_ms is not None and record.get("latency_p99_ms") is not None:
            misses = {**record["misses"], "p99_ms": record["latency_p99_ms"] - max_p99_ms}
            record |= {"misses": misses, "passed": all(v <= 0 for v in misses.values())}
        out.append(record)
    return out


def read_settled(folder: Path) -> dict[str, Any] | None:
    path = folder / SETTLED_FILE
    return read_json(path) if path.is_file() else None


def write_settled(folder: Path, settled: dict[str, Any]) -> None:
    write_json(folder / SETTLED_FILE, settled)


__all__ = ["SETTLED_FILE", "apply_settled", "read_settled", "settle", "to_settle", "write_settled"]

"""What a small test set or a noisy benchmark can and cannot say (issue 34: honest small-data reports).

- NDCG@10 of N test users is a mean of per-user values in [0, 1]; its 95% half-width is at most
  1.96 * sqrt(ndcg * (1 - ndcg) / N) (the variance of a [0, 1] variable with that mean is at most
  m(1 - m)). A teacher whose margin over the popularity baseline is within the combined half-width
  of the two has not shown it learned more than popularity: the report and `compress run` say so.
- On a small test set, differences are counted in hits: HR@10 x users, e.g. "13 (-1)".
- A batch-1 latency from fewer than 3 bench rounds, or whose rounds spread by more than 25% of their
  median, is marked noisy.
- The scoring model is `model.onnx` (or `model.safetensors`): counted apart from `step.onnx` and
  `metadata.json`, which ship beside it but do not score a history.
- Peak memory: a ratio between unlike measurements (another engine or another kind of memory) is
  dropped.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

Z95 = 1.96
SMALL_TEST = 2000  # test users below which differences are also shown in hits
MIN_ROUNDS = 3
MAX_ROUND_SPREAD = 0.25  # (highest - lowest) / median p50 over the rounds
SCORING_FILES = ("model.onnx", "model.onnx.data", "model.safetensors")


def half_width(ndcg: float, users: int) -> float:
    """Upper bound of the 95% half-width of a mean NDCG@10 over `users` test users."""
    if users <= 0:
        return math.inf
    return Z95 * math.sqrt(max(ndcg * (1 - ndcg), 0.0) / users)


def count_test_users(manifest: dict[str, Any]) -> int:
    """Users in the test split: leave-one-out gives every kept user one test item."""
    return int((manifest.get("data") or {}).get("stats", {}).get("users") or 0)


def teacher_versus_popularity(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The teacher's NDCG@10 margin over the popularity baseline and whether it is within noise."""
    stages, baseline = manifest.get("stages") or [], (manifest.get("baseline") or {}).get("metrics")
    users = count_test_users(manifest)
    if not stages or not baseline or not users:
        return None
    teacher, popularity = stages[0]["metrics"]["ndcg@10"], baseline["ndcg@10"]
    noise = math.hypot(half_width(teacher, users), half_width(popularity, users))
    return {"teacher": teacher, "popularity": popularity, "users": users, "margin": teacher - popularity,
            "noise": noise, "within_noise": teacher - popularity <= noise, "stage": stages[0]["name"]}


def popularity_warning(manifest: dict[str, Any]) -> str | None:
    """A sentence when the teacher does not beat the popularity baseline by more than the noise, else None."""
    check = teacher_versus_popularity(manifest)
    if check is None or not check["within_noise"]:
        return None
    return (f"the teacher ({check['stage']}, NDCG@10 {check['teacher']:.4f}) is within noise of the popularity "
            f"baseline ({check['popularity']:.4f}; margin {check['margin']:+.4f}, noise ±{check['noise']:.4f} at 95% "
            f"over {check['users']:,} test users): it has not shown that it learned more than item popularity, "
            "so the students' ratios to it say little. More data (or more epochs) first.")


def hits(hr_at_10: float, users: int) -> int:
    return round(hr_at_10 * users)


def hits_cell(hr_at_10: float, teacher_hr_at_10: float | None, users: int) -> str:
    """'13 (-1)': test users with the target in the top 10, and the difference to the teacher's count."""
    mine = hits(hr_at_10, users)
    if teacher_hr_at_10 is None:
        return f"{mine:,}"
    return f"{mine:,} ({mine - hits(teacher_hr_at_10, users):+,})"


def latency_noise(bench: dict[str, Any] | None) -> str | None:
    """Why a bench's batch-1 p50 is noisy ('1 round', 'rounds spread 40%'), or None."""
    if not bench:
        return None
    rounds = bench.get("round_latency_p50_ms") or []
    count = len(rounds) or int(bench.get("rounds") or 1)
    if count < MIN_ROUNDS:
        return f"{count} round" + ("" if count == 1 else "s")
    spread = (max(rounds) - min(rounds)) / statistics.median(rounds) if rounds and statistics.median(rounds) else 0
    if spread > MAX_ROUND_SPREAD:
        return f"rounds spread {spread:.0%}"
    return None


def scoring_model_bytes(artifact: Path) -> int | None:
    """Bytes of the file(s) that score a history: model.onnx (+ its external data) or model.safetensors;
    not step.onnx, metadata.json or parity.json. None when the folder holds none of them."""
    artifact = Path(artifact)
    found = [artifact / name for name in SCORING_FILES if (artifact / name).is_file()]
    return sum(path.stat().st_size for path in found) if found else None


def like_memory(bench: dict[str, Any] | None, teacher_bench: dict[str, Any] | None) -> bool:
    """Whether two peak-memory numbers were measured alike: the same engine and the same kind of memory."""
    if not bench or not teacher_bench:
        return False
    return (bench.get("engine") == teacher_bench.get("engine")
            and (bench.get("memory") or {}).get("kind") == (teacher_bench.get("memory") or {}).get("kind"))

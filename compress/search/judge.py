"""Decide on validation: a candidate's NDCG@10 against its teacher's, user by user, with a bootstrap CI.

Both are ranked on the validation split (full ranking, the recipe's eval settings); the paired
bootstrap of the per-user NDCG@10 difference gives a confidence interval of the drop, and a
candidate passes only when the pessimistic end of that interval is within the budget. Test
metrics are never used to decide; they are reported beside.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from compress.data.sequences import SequenceData
from compress.evaluation.bootstrap import PairedDifference, paired_bootstrap, per_user_ndcg
from compress.evaluation.config import EvalConfig
from compress.handlers import Artifact
from compress.search.spec import Constraints

K = 10
MIB = 1 << 20


def validation_ranks(artifact: Artifact, data: SequenceData, eval_config: EvalConfig, device: torch.device) -> np.ndarray:
    """0-based validation ranks of every evaluated user for a stage's artifact (PyTorch or ONNX)."""
    return artifact.ranks(data, eval_config, device, split="valid")


@dataclass(frozen=True)
class Verdict:
    """How a candidate fares against the constraints; `misses` > 0 by how much a limit is exceeded."""

    drop: PairedDifference  # candidate − teacher NDCG@10 (negative: a drop)
    budget: float  # the largest allowed drop, absolute NDCG points
    misses: dict[str, float]  # constraint -> amount over its limit (<= 0: met)

    @property
    def passed(self) -> bool:
        return all(value <= 0 for value in self.misses.values())

    @property
    def drop_high(self) -> float:
        """The pessimistic end of the drop's interval (positive: the candidate is worse)."""
        return -self.drop.low


def judge(
    candidate_ranks: np.ndarray,
    teacher_ranks: np.ndarray,
    constraints: Constraints,
    size_bytes: int,
    p99_ms: float | None,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Verdict:
    """The CI gate and the optional size and p99 limits for one candidate."""
    candidate, teacher = per_user_ndcg(candidate_ranks, K), per_user_ndcg(teacher_ranks, K)
    drop = paired_bootstrap(candidate, teacher, resamples=resamples, confidence=confidence, seed=seed)
    budget = constraints.max_ndcg_drop * (float(teacher.mean()) if constraints.drop == "relative" else 1.0)
    misses = {"ndcg_drop": -drop.low - budget}
    if constraints.max_size_mb is not None:
        misses["size_mb"] = size_bytes / MIB - constraints.max_size_mb
    if constraints.max_p99_ms is not None:
        misses["p99_ms"] = (p99_ms if p99_ms is not None else float("inf")) - constraints.max_p99_ms
    return Verdict(drop, budget, misses)


def verdict_record(verdict: Verdict, teacher_ndcg: float, candidate_ndcg: float) -> dict[str, Any]:
    return {
        "valid_ndcg@10": candidate_ndcg,
        "teacher_valid_ndcg@10": teacher_ndcg,
        "ndcg_drop": {"mean": -verdict.drop.mean, "ci_low": -verdict.drop.high, "ci_high": verdict.drop_high,
                      "confidence": verdict.drop.confidence, "users": verdict.drop.users},
        "drop_budget": verdict.budget,
        "misses": verdict.misses,
        "passed": verdict.passed,
    }

"""Paired bootstrap over users: is a candidate's metric really below (or above) a reference's?

Both models are ranked on the same users; resampling users with replacement (the same draw for
both) gives the distribution of the mean per-user difference, whose percentile interval is the
confidence interval reported beside every "the student keeps X%" and used by the search to
decide whether a candidate stays within an accuracy budget. numpy only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class PairedDifference:
    """candidate − reference: the observed mean difference and its percentile bootstrap interval."""

    mean: float
    low: float
    high: float
    confidence: float
    users: int
    resamples: int
    seed: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def per_user_ndcg(ranks: np.ndarray, k: int) -> np.ndarray:
    """NDCG@k of each user from 0-based target ranks (one relevant item: 1/log2(rank + 2) if rank < k)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    return np.where(ranks < k, 1.0 / np.log2(ranks + 2), 0.0)


def paired_bootstrap(
    candidate: np.ndarray,
    reference: np.ndarray,
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    chunk: int = 256,
) -> PairedDifference:
    """Bootstrap the mean of `candidate − reference` (per-user values of the same users, in order).

    Users are drawn with replacement `resamples` times with a fixed seed; the interval is the
    (1 − confidence)/2 and (1 + confidence)/2 percentiles of the resampled means.
    """
    candidate, reference = np.asarray(candidate, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if candidate.shape != reference.shape or candidate.ndim != 1:
        raise ValueError(f"paired values must be two 1-D arrays of one length, got {candidate.shape} and {reference.shape}")
    if candidate.size == 0:
        raise ValueError("paired bootstrap needs at least one user")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    diff = candidate - reference
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, chunk):  # [chunk, users] index draws at a time bound the memory
        stop = min(start + chunk, resamples)
        means[start:stop] = diff[rng.integers(0, diff.size, size=(stop - start, diff.size))].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return PairedDifference(
        mean=float(diff.mean()), low=float(low), high=float(high), confidence=confidence,
        users=int(diff.size), resamples=resamples, seed=seed,
    )


def within_budget(difference: PairedDifference, max_drop: float, reference_mean: float | None = None) -> bool:
    """True when even the pessimistic end of the interval loses at most `max_drop`.

    `max_drop` is absolute (NDCG points), or relative to `reference_mean` when that is given
    (0.02 = 2% of the reference's mean).
    """
    budget = max_drop * reference_mean if reference_mean is not None else max_drop
    return -difference.low <= budget


def describe(difference: dict[str, Any] | PairedDifference) -> str:
    """'+0.0012 [-0.0030, +0.0051]' (the mean difference and its interval)."""
    d = difference.as_dict() if isinstance(difference, PairedDifference) else difference
    return f"{d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"


def excludes_zero(difference: dict[str, Any]) -> bool:
    """Whether the interval lies entirely on one side of 0 (a difference the test users support)."""
    return difference["low"] > 0 or difference["high"] < 0

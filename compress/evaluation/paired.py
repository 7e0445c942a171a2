"""Paired comparisons of two stage artifacts on the same test users: per-user ranks (each artifact
handler's `ranks`, compress/handlers/), then the bootstrap interval of the NDCG@K difference
(compress/evaluation/bootstrap.py).
"""

from __future__ import annotations

import numpy as np

from compress.evaluation.bootstrap import PairedDifference, paired_bootstrap, per_user_ndcg

DIFFERENCE_K = 10


def ndcg_difference(
    candidate: np.ndarray, reference: np.ndarray, k: int = DIFFERENCE_K, seed: int = 0
) -> PairedDifference:
    """candidate − reference NDCG@k over the same users, with its 95% paired-bootstrap interval."""
    return paired_bootstrap(per_user_ndcg(candidate, k), per_user_ndcg(reference, k), seed=seed)

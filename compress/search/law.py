"""The performance law of sequential recommenders (Shen et al., arXiv 2412.00430) over the trials.

The paper fits HR/NDCG against model size with a term that rises and saturates and one that
decays (larger models overfit); per size variable its fitting code uses

    P(N) = w * (-1 / (c * N**a) - a * ln N) + b

Here N is a candidate's student parameter count, scaled by the median over the trials (so c
stays near 1), and P its validation NDCG@10. For fixed (a, c) the law is linear in (w, b), so the
fit is exact least squares for (w, b) on a log grid of (a, c): numpy only, no local minima to
start from. It describes the trials; the search does not skip candidates by it (a candidate's
parameter count is only known once its stages have run, and quantisation leaves it unchanged).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

MIN_POINTS = 4


@dataclass(frozen=True)
class LawFit:
    w: float
    a: float
    c: float
    b: float
    scale: float  # N is divided by this before the law is applied
    r2: float
    points: int

    def predict(self, params: np.ndarray) -> np.ndarray:
        return law(np.asarray(params, dtype=np.float64) / self.scale, self.w, self.a, self.c, self.b)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def law(n: np.ndarray, w: float, a: float, c: float, b: float) -> np.ndarray:
    return w * _shape(n, a, c) + b


def _shape(n: np.ndarray, a: float, c: float) -> np.ndarray:
    return -1.0 / (c * n**a) - a * np.log(n)


def fit_law(params: np.ndarray, ndcg: np.ndarray) -> LawFit | None:
    """Least-squares fit of the law to (parameters, NDCG@10) points; None with fewer than 4 distinct sizes."""
    params, ndcg = np.asarray(params, dtype=np.float64), np.asarray(ndcg, dtype=np.float64)
    if len(np.unique(params)) < MIN_POINTS:
        return None
    scale = float(np.median(params))
    n = params / scale
    best: tuple[float, float, float, float, float] | None = None
    for a in np.logspace(-2, 1, 61):
        for c in np.logspace(-2, 2, 41):
            design = np.stack([_shape(n, a, c), np.ones_like(n)], axis=1)
            (w, b), *_ = np.linalg.lstsq(design, ndcg, rcond=None)
            sse = float(np.sum((design @ np.array([w, b]) - ndcg) ** 2))
            if best is None or sse < best[0]:
                best = (sse, float(w), float(a), float(c), float(b))
    sse, w, a, c, b = best  # type: ignore[misc]
    total = float(np.sum((ndcg - ndcg.mean()) ** 2))
    return LawFit(w=w, a=a, c=c, b=b, scale=scale, r2=1.0 - sse / total if total > 0 else 1.0, points=len(ndcg))

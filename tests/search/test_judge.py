"""The CI gate on constructed rankings: pass only when the pessimistic end of the drop's interval fits."""

import numpy as np
import pytest

from compress.search.judge import judge
from compress.search.spec import Constraints


def ranks(hits: int, users: int = 400) -> np.ndarray:
    """`hits` users with the target first (NDCG 1), the others beyond the cut-off (NDCG 0)."""
    return np.array([0] * hits + [50] * (users - hits))


def test_identical_rankings_pass_with_a_zero_interval():
    verdict = judge(ranks(200), ranks(200), Constraints(max_ndcg_drop=0.01), size_bytes=1, p99_ms=None)
    assert verdict.passed and verdict.drop.low == verdict.drop.high == 0.0


def test_mean_drop_inside_the_budget_but_ci_outside_fails():
    teacher = ranks(200)
    candidate = teacher.copy()
    candidate[:20] = 50  # 20 of 400 users lose their hit: mean drop 0.05 NDCG points
    loose, tight = Constraints(max_ndcg_drop=0.1, drop="absolute"), Constraints(max_ndcg_drop=0.06, drop="absolute")
    assert judge(candidate, teacher, loose, 1, None).passed
    verdict = judge(candidate, teacher, tight, 1, None)
    assert verdict.drop.mean == pytest.approx(-0.05)  # the mean drop alone would pass a 0.06 budget
    assert verdict.drop_high > 0.06 and not verdict.passed  # its 95% CI's upper end does not
    assert verdict.misses["ndcg_drop"] == pytest.approx(verdict.drop_high - 0.06)


def test_relative_budget_scales_with_the_teacher():
    teacher, candidate = ranks(200), ranks(200)
    candidate[:2] = 50
    verdict = judge(candidate, teacher, Constraints(max_ndcg_drop=0.1), 1, None)
    assert verdict.budget == pytest.approx(0.1 * 0.5) and verdict.passed


def test_size_and_p99_limits():
    same = ranks(100)
    limits = Constraints(max_ndcg_drop=0.1, max_size_mb=1.0, max_p99_ms=2.0)
    verdict = judge(same, same, limits, size_bytes=3 << 20, p99_ms=1.5)
    assert not verdict.passed and verdict.misses["size_mb"] == pytest.approx(2.0) and verdict.misses["p99_ms"] < 0
    assert judge(same, same, limits, size_bytes=1 << 19, p99_ms=1.5).passed
    assert not judge(same, same, limits, size_bytes=1, p99_ms=None).passed  # a p99 limit needs a measurement

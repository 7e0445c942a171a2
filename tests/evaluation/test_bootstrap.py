import itertools

import numpy as np
import pytest

from compress.evaluation.bootstrap import paired_bootstrap, per_user_ndcg, within_budget
from compress.evaluation.metrics import metrics_from_ranks


def test_per_user_ndcg_averages_to_the_metric():
    ranks = np.array([0, 3, 9, 10, 250, 1])
    assert per_user_ndcg(ranks, 10).mean() == pytest.approx(metrics_from_ranks(ranks, [10])["ndcg@10"])


def test_interval_matches_the_exhaustive_bootstrap_of_a_tiny_case():
    """With 5 users, every one of the 5**5 equally likely resamples can be enumerated."""
    candidate, reference = np.array([0.5, 0.0, 1.0, 0.3, 0.2]), np.array([0.4, 0.6, 1.0, 0.0, 0.5])
    diff = candidate - reference
    exact = np.array([diff[list(draw)].mean() for draw in itertools.product(range(5), repeat=5)])
    low, high = np.quantile(exact, [0.025, 0.975])
    result = paired_bootstrap(candidate, reference, resamples=40_000, seed=1)
    assert result.mean == pytest.approx(diff.mean())
    assert result.low == pytest.approx(low, abs=0.02) and result.high == pytest.approx(high, abs=0.02)
    assert result.low < result.mean < result.high


def test_pairing_removes_the_user_to_user_spread():
    """A candidate a constant 0.01 below the reference on every user: the paired interval is a point."""
    reference = np.random.default_rng(0).uniform(0, 1, 500)
    result = paired_bootstrap(reference - 0.01, reference, resamples=200)
    assert result.low == pytest.approx(-0.01) and result.high == pytest.approx(-0.01)


def independent_interval(candidate, reference, resamples, seed, confidence=0.95):
    """The percentile bootstrap written out plainly, one resample at a time, on the draws a seed stands
    for (one generator: resamples rows of users-many user indices, row after row)."""
    diff = candidate - reference
    draws = np.random.default_rng(seed).integers(0, len(diff), size=(resamples, len(diff)))
    means = [sum(diff[i] for i in draw) / len(diff) for draw in draws]
    return tuple(np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2]))


def test_same_seed_same_interval_another_seed_another_and_bad_input_is_an_error():
    a, b = np.random.default_rng(1).uniform(size=(2, 300))
    first, second = paired_bootstrap(a, b, seed=3), paired_bootstrap(a.copy(), b.copy(), seed=3)
    assert (first.low, first.high, first.seed) == (second.low, second.high, 3)  # two calls, one answer
    assert (first.low, first.high) == pytest.approx(independent_interval(a, b, 2000, seed=3), abs=1e-12)
    other = paired_bootstrap(a, b, seed=4)
    assert (other.low, other.high) != (first.low, first.high) and other.mean == first.mean  # only the draws moved
    assert (other.low, other.high) == pytest.approx(independent_interval(a, b, 2000, seed=4), abs=1e-12)
    # known answers: no difference gives [0, 0]; a constant shift gives that shift, at any seed
    for seed in (0, 3):
        same = paired_bootstrap(a, a.copy(), seed=seed)
        assert (same.mean, same.low, same.high) == (0.0, 0.0, 0.0)
        shifted = paired_bootstrap(a + 0.25, a, seed=seed)
        assert (shifted.mean, shifted.low, shifted.high) == pytest.approx((0.25, 0.25, 0.25), abs=1e-12)
    with pytest.raises(ValueError, match="one length"):
        paired_bootstrap(a, b[:10])
    with pytest.raises(ValueError, match="at least one user"):
        paired_bootstrap(a[:0], b[:0])


@pytest.mark.parametrize("max_drop, relative, expected", [(0.02, None, True), (0.005, None, False),
                                                          (0.05, 0.5, True), (0.01, 0.5, False)])
def test_budget_uses_the_pessimistic_end_of_the_interval(max_drop, relative, expected):
    reference = np.random.default_rng(2).uniform(0, 1, 2000)
    candidate = reference - 0.01 + np.random.default_rng(3).normal(0, 0.01, 2000)
    result = paired_bootstrap(candidate, reference)
    assert within_budget(result, max_drop, relative) is expected

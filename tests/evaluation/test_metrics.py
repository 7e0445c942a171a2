import itertools

import numpy as np
import pytest
import torch

from compress.data.batching import eval_batches
from compress.data.sequences import build_sequences
from compress.evaluation.metrics import (
    EvalConfig,
    chunked_ranks,
    evaluate_model,
    evaluate_popularity,
    evaluate_scores,
    mask_history_items,
    metrics_from_ranks,
    target_ranks,
    top_k_items,
)
import pandas as pd


def brute_force(scores: list[list[float]], targets: list[int], k: int) -> dict[str, float]:
    """Reference: sort each row, find the target's position (ties resolved against it)."""
    hr = ndcg = mrr = 0.0
    for row, target in zip(scores, targets):
        order = sorted(range(len(row)), key=lambda i: (-row[i], i == target))
        rank = order.index(target)
        if rank < k:
            hr += 1
            ndcg += 1 / np.log2(rank + 2)
            mrr += 1 / (rank + 1)
    n = len(targets)
    return {f"hr@{k}": hr / n, f"ndcg@{k}": ndcg / n, f"mrr@{k}": mrr / n}


def test_metrics_match_brute_force():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=(30, 12)).astype(float)  # many ties on purpose
    targets = rng.integers(0, 12, size=30)
    ranks = target_ranks(torch.tensor(scores), torch.tensor(targets)).numpy()
    for k in (1, 3, 5, 10):
        ours = metrics_from_ranks(ranks, [k])
        reference = brute_force(scores.tolist(), targets.tolist(), k)
        for key, value in reference.items():
            assert ours[key] == pytest.approx(value)


def test_hand_made_case():
    scores = torch.tensor([[0.0, 0.9, 0.5, 0.1], [0.0, 0.2, 0.3, 0.8]])
    ranks = target_ranks(scores, torch.tensor([1, 1]))
    assert ranks.tolist() == [0, 2]
    metrics = metrics_from_ranks(ranks.numpy(), [1, 5])
    assert metrics["hr@1"] == 0.5 and metrics["hr@5"] == 1.0
    assert metrics["ndcg@5"] == pytest.approx((1 + 1 / np.log2(4)) / 2)
    assert metrics["mrr@5"] == pytest.approx((1 + 1 / 3) / 2)


def test_constant_scores_get_no_credit():
    ranks = target_ranks(torch.zeros(4, 10), torch.tensor([1, 2, 3, 4]))
    assert (ranks == 9).all()


def test_history_mask_keeps_the_target():
    scores = torch.ones(1, 6)
    masked = mask_history_items(scores, [np.array([1, 2, 3])], torch.tensor([2]))
    assert masked[0].tolist() == [1, float("-inf"), 1, float("-inf"), 1, 1]


def oracle_scores(data, split):
    def score(batch):
        out = torch.zeros(len(batch.targets), data.num_items + 1)
        out[torch.arange(len(batch.targets)), batch.targets] = 1.0
        return out

    return score


def test_an_oracle_scores_perfectly_and_popularity_does_not(tiny_data):
    config = EvalConfig()
    perfect = evaluate_scores(oracle_scores(tiny_data, "test"), tiny_data, "test", config, max_len=20)
    assert perfect["hr@1"] == 1.0 and perfect["ndcg@10"] == 1.0
    popularity = evaluate_popularity(tiny_data, "test", config, max_len=20)
    assert 0 < popularity["hr@10"] < 1


def test_sampled_protocol_is_seeded_and_easier(tiny_data):
    sampled = EvalConfig(protocol="sampled", num_negatives=20, seed=3)
    first = evaluate_popularity(tiny_data, "test", sampled, 20)
    again = evaluate_popularity(tiny_data, "test", sampled, 20)
    full = evaluate_popularity(tiny_data, "test", EvalConfig(), 20)
    assert first == again
    assert first["hr@10"] > full["hr@10"]


def test_evaluate_model_runs_in_batches(tiny_data, tiny_model):
    small = evaluate_model(tiny_model, tiny_data, "valid", EvalConfig(batch_size=7), torch.device("cpu"))
    large = evaluate_model(tiny_model, tiny_data, "valid", EvalConfig(batch_size=500), torch.device("cpu"))
    assert small == pytest.approx(large)
    assert small["users"] == tiny_data.num_users


@pytest.mark.parametrize("chunk", [1, 3, 7, 13, 20, 21, 1000])
def test_chunked_ranks_equal_whole_row_ranks_with_ties_and_history(chunk):
    rng = np.random.default_rng(1)
    scores = torch.from_numpy(rng.integers(0, 4, size=(9, 21)).astype(np.float32))  # 20 items, many ties
    scores[:, 0] = float("-inf")
    targets = torch.from_numpy(rng.integers(1, 21, size=9))
    histories = [rng.choice(np.arange(1, 21), size=int(rng.integers(0, 6)), replace=False) for _ in range(9)]
    expected = target_ranks(mask_history_items(scores, histories, targets), targets)
    target_scores = scores.gather(1, targets[:, None]).squeeze(1)

    ranks = chunked_ranks(lambda a, b: scores[:, a:b], target_scores, targets, histories, 20, chunk)

    assert ranks.tolist() == expected.tolist()


def test_evaluate_model_gives_the_same_metrics_for_every_item_chunk(tiny_data, tiny_model):
    cpu = torch.device("cpu")
    whole = evaluate_model(tiny_model, tiny_data, "test", EvalConfig(), cpu)  # one chunk: 60 items
    for chunk in (1, 7, 16, 59, 60, 61):
        assert evaluate_model(tiny_model, tiny_data, "test", EvalConfig(item_chunk=chunk), cpu) == whole
    rows = evaluate_scores(
        lambda b: tiny_model.score(tiny_model.last_states(b.item_ids, b.attention_mask)), tiny_data, "test",
        EvalConfig(item_chunk=7), max_len=20,
    )
    assert rows == pytest.approx(whole)  # scores of whole rows (as onnxruntime gives them)


def test_top_k_merged_over_chunks_equals_the_exported_graphs_top_k(tiny_data, tiny_model):
    from compress.export.onnx_export import RankingGraph

    batch = next(iter(eval_batches(tiny_data, "test", 20, 16)))
    expected_scores, expected_ids = RankingGraph(tiny_model, 10)(batch.item_ids, batch.attention_mask)[:2]
    for chunk in (1, 7, 10, 60, 61, 8192):
        scores, ids = top_k_items(tiny_model, batch.item_ids, batch.attention_mask, 10, item_chunk=chunk)
        assert ids.tolist() == expected_ids.tolist()
        torch.testing.assert_close(scores, expected_scores)  # BLAS may round another matrix width differently

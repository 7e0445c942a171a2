"""The PyTorch step model (transformers DynamicCache) gives the full pass's scores while the history fits."""

import pytest
import torch

from compress.models import RecommenderConfig, SequentialRecommender
from compress.models.step import StepGraph, append, empty_past


@pytest.fixture
def model():
    torch.manual_seed(0)
    config = RecommenderConfig(hidden_size=16, num_layers=2, num_heads=4, num_kv_heads=2, num_items=40, max_len=10,
                               dropout=0.0)
    return SequentialRecommender(config).eval()


def full_pass(model, history):
    ids = torch.zeros(1, model.config.max_len, dtype=torch.long)
    ids[0, -len(history):] = history
    return model.score(model.last_states(ids, (ids > 0).long()))[0]


def pad_left(past, length):
    return torch.cat([past.new_zeros(*past.shape[:2], length - past.shape[2], past.shape[3]), past], dim=2)


@torch.no_grad()
@pytest.mark.parametrize("length", [1, 2, 6, 10])
def test_empty_state_prefill_and_one_item_steps_equal_the_full_pass(model, length):
    graph = StepGraph(model, 5)
    history = torch.randint(1, 41, (length,))
    expected = full_pass(model, history)
    prefill, _ = graph.advance(history[None], torch.ones(1, length, dtype=torch.long), torch.arange(length)[None],
                               empty_past(model, 1))
    past = empty_past(model, 1)
    for t in range(length):
        scores, new = graph.advance(history[t : t + 1][None], torch.ones(1, t + 1, dtype=torch.long),
                                    torch.tensor([[t]]), past)
        assert new[0].shape[2] == 1
        past = append(past, new)
        assert past[0].shape[2] == t + 1
    for got in (prefill[0], scores[0]):
        assert torch.allclose(got[1:], expected[1:], atol=1e-5)
        assert got[1:].topk(5).indices.tolist() == expected[1:].topk(5).indices.tolist()


@torch.no_grad()
def test_a_batch_of_users_with_different_cache_lengths(model):
    graph = StepGraph(model, 5)
    histories = [torch.randint(1, 41, (n,)) for n in (1, 4, 9)]
    pasts = [graph.advance(h[:-1][None], torch.ones(1, len(h) - 1, dtype=torch.long),
                           torch.arange(len(h) - 1)[None], empty_past(model, 1))[1] if len(h) > 1 else empty_past(model, 1)
             for h in histories]
    longest = max(len(h) - 1 for h in histories)
    past = [torch.cat([pad_left(p[i], longest) for p in pasts]) for i in range(len(pasts[0]))]
    mask = torch.zeros(3, longest + 1, dtype=torch.long)
    for row, h in enumerate(histories):
        mask[row, longest - (len(h) - 1):] = 1
    items = torch.stack([h[-1:] for h in histories])
    positions = torch.tensor([[len(h) - 1] for h in histories])
    exclude = torch.zeros(3, 1, dtype=torch.long)
    top_scores, top_ids, scores, *new = graph(items, mask, positions, exclude, *past)
    expected = torch.stack([full_pass(model, h) for h in histories])
    assert torch.allclose(scores[:, 1:], expected[:, 1:], atol=1e-5)
    assert len(new) == 2 * model.config.num_layers and new[0].shape == (3, 2, 1, model.config.head_dim)
    # the new slots' keys/values equal those a prefill of the whole history caches for its last position
    for row, h in enumerate(histories):
        prefill = graph.advance(h[None], torch.ones(1, len(h), dtype=torch.long), torch.arange(len(h))[None],
                                empty_past(model, 1))[1]
        assert all(torch.allclose(n[row], p[0, :, -1:], atol=1e-5) for n, p in zip(new, prefill))
    assert (top_ids == expected.topk(5).indices).all()


@torch.no_grad()
def test_grouped_query_attention_equals_sdpa_and_ignores_the_order_of_cached_slots():
    from transformers.integrations.sdpa_attention import repeat_kv

    from compress.models.step import grouped_query_attention

    torch.manual_seed(0)
    batch, heads, kv_heads, new, total, dim = 3, 4, 2, 2, 7, 8
    query = torch.randn(batch, heads, new, dim)
    key, value = torch.randn(batch, kv_heads, total, dim), torch.randn(batch, kv_heads, total, dim)
    mask = torch.rand(batch, 1, new, total) > 0.4
    mask[..., -1] = True  # every query sees at least one slot
    expected = torch.nn.functional.scaled_dot_product_attention(
        query, repeat_kv(key, 2), repeat_kv(value, 2), attn_mask=mask, scale=0.3).transpose(1, 2)
    module = torch.nn.Module()
    got, _ = grouped_query_attention(module, query, key, value, mask, scaling=0.3)
    assert got.shape == (batch, new, heads, dim) and torch.allclose(got, expected, atol=1e-6)
    order = torch.randperm(total)
    shuffled, _ = grouped_query_attention(module, query, key[:, :, order], value[:, :, order], mask[..., order], scaling=0.3)
    assert torch.allclose(shuffled, got, atol=1e-6)

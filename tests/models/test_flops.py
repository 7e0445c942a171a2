"""The analytic FLOP count: against a hand count, and against torch's own count of the model's matmuls."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from compress.models import RecommenderConfig, SequentialRecommender
from compress.models.flops import achieved_gflops, flops_per_sequence

# hidden 16, item_dim 8 (projected), 2 layers, 4 query heads of width 4 sharing 2 kv heads, MLP 24,
# 20 items (21 table rows), sequences of 6
TINY = dict(num_items=20, hidden_size=16, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=24,
            item_dim=8, max_len=6, dropout=0.0)


def test_flops_match_a_hand_count():
    flops = flops_per_sequence(RecommenderConfig(**TINY))
    # 2 FLOPs per multiply-add; L = 6 positions
    assert flops["input_projection"] == 2 * 6 * 8 * 16  # 1,536
    # q and o 16x16, k and v 16x8 (2 kv heads x 4) -> (256 + 256 + 128 + 128) MACs per position; the last
    # layer computes k and v at all 6 positions, q and o at the last one
    assert flops["attention_projections"] == 2 * (6 * 768 + 512 + 6 * 256)  # 13,312
    # per head: QK^T 6x6x4 MACs and the same for the weighted sum of V; the last layer: one query row
    assert flops["attention_scores"] == 4 * (2 * 144 + 2 * 144) + 4 * (2 * 24 + 2 * 24)  # 2,688
    # gate and up 16 -> 24, down 24 -> 16: 6 positions, then the last layer's last position
    assert flops["mlp"] == 2 * 3 * 384 * (6 + 1)  # 16,128
    assert flops["output_projection"] == 2 * 16 * 8  # the last position only
    assert flops["scoring"] == 2 * 8 * 21
    assert flops["total"] == 1_536 + 13_312 + 2_688 + 16_128 + 256 + 336


def test_flops_scale_with_the_shape():
    base = RecommenderConfig(**TINY)
    deeper = RecommenderConfig(**{**TINY, "num_layers": 4})
    square = RecommenderConfig(**{**TINY, "item_dim": 16})  # no projections
    per_layer = 2 * 3 * 6 * 16 * 24  # a full layer's MLP: 6 positions
    assert flops_per_sequence(deeper)["mlp"] - flops_per_sequence(base)["mlp"] == 2 * per_layer
    assert flops_per_sequence(square)["input_projection"] == flops_per_sequence(square)["output_projection"] == 0
    short = flops_per_sequence(base, length=3)
    # quadratic in length in the full layers, linear in the last one's single query
    assert short["attention_scores"] == 4 * (2 * 36 + 2 * 36) + 4 * (2 * 12 + 2 * 12)
    assert short["scoring"] == flops_per_sequence(base)["scoring"]  # one scored position whatever the length


@pytest.mark.parametrize("shape", [TINY, {**TINY, "item_dim": 16, "num_kv_heads": 4, "max_len": 9}])
def test_flops_agree_with_torch_flop_counter(shape):
    """torch counts every mm/bmm the model runs (eager attention, so QK^T and AV are bmm's)."""
    config = RecommenderConfig(**shape)
    model = SequentialRecommender(config).eval()
    model.backbone.config._attn_implementation = "eager"  # SDPA's CPU kernel is invisible to the counter
    ids = torch.randint(1, config.num_items + 1, (1, config.max_len))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.next_item_scores(ids, torch.ones_like(ids))
    flops = flops_per_sequence(config)
    assert counter.get_total_flops() == flops["total"]  # the last position alone is projected and scored


def test_achieved_gflops():
    assert achieved_gflops(2_000_000_000, 0.5) == pytest.approx(4.0)

"""The last-position path (compress/models/last_query.py) against the full backbone."""

import pytest
import torch

from compress.models import RecommenderConfig, SequentialRecommender


@pytest.mark.parametrize("layers, heads, kv_heads", [(1, 1, 1), (3, 4, 2), (2, 2, 2)])
def test_last_position_state_equals_the_full_pass(layers, heads, kv_heads):
    torch.manual_seed(layers)
    config = RecommenderConfig(num_items=40, max_len=12, hidden_size=16, num_layers=layers, num_heads=heads,
                               num_kv_heads=kv_heads, intermediate_size=24, dropout=0.0)
    model = SequentialRecommender(config).eval()
    ids = torch.randint(1, 41, (5, 12))
    for row, length in enumerate([12, 7, 1, 3, 11]):  # left padding of every length, one item alone
        ids[row, : 12 - length] = 0
    mask = (ids > 0).long()
    with torch.no_grad():
        full = model(ids, mask)[0][:, -1]
        fast = model(ids, mask, last_only=True)[0][:, -1]
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-5)


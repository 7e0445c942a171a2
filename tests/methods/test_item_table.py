"""Item-table compression: quantisation error bounds, packing, frequency groups, low rank, tied tables."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compress.methods.item_table import (
    compressed_spec, factorized_table, frequency_groups, quantize_rows, quantized_table, table_bytes, training_counts,
)
from compress.models import SequentialRecommender, load_model, save_model
from compress.models.item_tables import dequantize, pack_codes, unpack_codes


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_rowwise_error_is_at_most_half_a_step_per_row(bits):
    weight = torch.randn(50, 32) * torch.linspace(0.01, 3, 50)[:, None]  # rows of very different ranges
    weight[0] = 0
    codes, scale, offset = quantize_rows(weight, bits)
    restored = dequantize(codes, scale, offset, bits, 32)
    assert codes.dtype == torch.uint8 and codes.shape == (50, 32 * bits // 8)
    error = (weight - restored).abs().amax(dim=1)
    assert torch.all(error <= scale.float() / 2 * (1 + 1e-3) + 1e-7)
    assert torch.equal(restored[0], torch.zeros(32))  # padding stays exactly zero
    coarser = dequantize(*quantize_rows(weight, 2), 2, 32) if bits > 2 else restored
    assert (weight - restored).abs().mean() <= (weight - coarser).abs().mean()


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_packing_round_trips(bits):
    codes = torch.randint(0, 1 << bits, (7, 16), dtype=torch.int32)
    assert torch.equal(unpack_codes(pack_codes(codes, bits), bits, 16), codes)


def test_frequency_groups_give_the_popular_items_high_bits(tiny_data):
    counts = training_counts(tiny_data)
    assert counts[0] == 0 and counts.sum() == sum(len(tiny_data.sequence(u)) - 2 for u in range(tiny_data.num_users))
    groups = frequency_groups(counts, 0.5)
    high = np.flatnonzero(groups == 0)
    assert groups[0] == 1 and 0 < len(high) < tiny_data.num_items
    assert counts[high].min() >= counts[np.flatnonzero(groups == 1)[1:]].max()  # every high item beats every low one
    assert counts[high].sum() >= 0.5 * counts.sum()
    assert (frequency_groups(counts, 0.0) == 1).all()


def test_low_rank_is_the_truncated_svd():
    weight = torch.randn(40, 16)
    weight[0] = 0
    table = factorized_table(weight, 4)
    u, s, vh = torch.linalg.svd(weight)
    best = (u[:, :4] * s[:4]) @ vh[:4]
    assert torch.allclose(table.weight[1:], best[1:], atol=1e-5)
    assert torch.equal(table.left[0], torch.zeros(4))
    assert table_bytes(table) == (40 * 4 + 4 * 16) * 4
    with pytest.raises(ValueError, match="rank"):
        factorized_table(weight, 16)


def compressed(model: SequentialRecommender, table: torch.nn.Module) -> SequentialRecommender:
    out = SequentialRecommender(model.config.model_copy(update={"table": compressed_spec(table)}))
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("item_embeddings.")}
    out.load_state_dict(state | {f"item_embeddings.{k}": v for k, v in table.state_dict().items()})
    return out.eval()


def tables(model: SequentialRecommender, data) -> dict[str, torch.nn.Module]:
    weight = model.item_embeddings.weight.detach()
    return {
        "int4": quantized_table(weight, [4], np.zeros(len(weight), dtype=np.int64)),
        "mixed": quantized_table(weight, [8, 2], frequency_groups(training_counts(data), 0.6)),
        "lowrank": factorized_table(weight, 4),
    }


@pytest.mark.parametrize("method", ["int4", "mixed", "lowrank"])
def test_lookup_and_scoring_share_the_compressed_table_and_survive_save_load(tiny_model, tiny_data, tmp_path, method):
    model = compressed(tiny_model, tables(tiny_model, tiny_data)[method])
    table = model.item_table.detach()
    ids = torch.tensor([[0, 3, 7, 9], [1, 2, 3, 4]])
    assert torch.allclose(model.item_embeddings(ids), table[ids], atol=1e-6)  # lookup = rows of the table
    with torch.no_grad():
        states = model.last_states(ids, (ids > 0).long())
        scores = model.score(states)
        assert torch.allclose(scores[:, 1:], states @ table[1:].t(), atol=1e-5)  # scoring = the same table
        assert torch.allclose(model.score(states, 5, 20), scores[:, 5:20], atol=1e-5)
    assert torch.isneginf(scores[:, 0]).all()
    save_model(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.config.table == model.config.table
    with torch.no_grad():
        assert torch.equal(loaded.score(loaded.last_states(ids, (ids > 0).long())), scores)
    assert loaded.num_parameters() <= tiny_model.num_parameters()


def test_mixed_precision_keeps_popular_rows_closer(tiny_model, tiny_data):
    weight = tiny_model.item_embeddings.weight.detach()
    groups = frequency_groups(training_counts(tiny_data), 0.6)
    error = (quantized_table(weight, [8, 2], groups).weight - weight).abs().amax(dim=1)
    assert error[torch.from_numpy(groups == 0)].max() < error[torch.from_numpy(groups == 1)][1:].min()

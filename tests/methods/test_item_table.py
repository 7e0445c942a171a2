"""Item-table compression: quantisation error bounds, packing, frequency groups, low rank, tied tables."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compress.export.item_table import unpack
from compress.methods.item_table import (
    CLIP_STEPS, FakeQuantTable, budget_groups, compressed_spec, error_allocation, factorized_table, frequency_groups, quantize_rows, quantized_table, table_bytes, training_counts,
)
from compress.models import SequentialRecommender, load_model, save_model
from compress.models.item_tables import QuantizedTable, dequantize, pack_codes, unpack_codes
from compress.models.packing import packed_width


@pytest.mark.parametrize("bits", [8, 6, 5, 4, 3, 2])
def test_rowwise_error_is_half_a_step_inside_the_range_and_clipping_only_lowers_it(bits):
    weight = torch.randn(50, 32) * torch.linspace(0.01, 3, 50)[:, None]  # rows of very different ranges
    weight[0] = 0
    codes, scale, offset = quantize_rows(weight, bits)
    restored = dequantize(codes, scale, offset, bits, 32)
    assert codes.dtype == torch.uint8 and codes.shape == (50, packed_width(32, bits))
    low, high = offset.float()[:, None], offset.float()[:, None] + scale.float()[:, None] * ((1 << bits) - 1)
    inside = (weight >= low) & (weight <= high)
    bound = (scale.float() / 2 * (1 + 1e-3) + 1e-7)[:, None].expand_as(weight)
    assert torch.all((weight - restored).abs()[inside] <= bound[inside])
    span = weight.amax(1) - weight.amin(1)
    assert torch.all((weight - restored).abs().amax(1) <= max(CLIP_STEPS) * span + bound[:, 0])
    assert torch.equal(restored[0], torch.zeros(32))  # padding stays exactly zero
    plain = dequantize(*quantize_rows(weight, bits, clip=False), bits, 32)  # the [min, max] grid: every value inside
    assert torch.all((weight - plain).abs().amax(1) <= scale_of(weight, bits) / 2 * (1 + 1e-3) + 1e-7)
    assert torch.all(((weight - restored) ** 2).sum(1) <= ((weight - plain) ** 2).sum(1) * (1 + 1e-6))
    if bits == 8:
        assert torch.equal(restored, plain)  # no clipping at 8 bits
    elif bits <= 4:
        assert ((weight - restored) ** 2).sum() < ((weight - plain) ** 2).sum()


def scale_of(weight: torch.Tensor, bits: int) -> torch.Tensor:
    return (weight.amax(1) - weight.amin(1)) / ((1 << bits) - 1)


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 6, 8])
def test_packing_round_trips_and_takes_bits_over_8_bytes_a_value(bits):
    codes = torch.randint(0, 1 << bits, (7, 16), dtype=torch.int32)
    packed = pack_codes(codes, bits)
    assert packed.dtype == torch.uint8 and packed.shape == (7, 16 * bits // 8)
    assert torch.equal(unpack_codes(packed, bits, 16), codes)
    assert np.array_equal(unpack(packed.numpy(), bits, 16), codes.numpy())  # the torch-free reader agrees


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
        "mixed43": quantized_table(weight, [4, 3], budget_groups(training_counts(data), weight.shape[1], 4, 3, 5.5)),
        "lowrank": factorized_table(weight, 4),
    }


@pytest.mark.parametrize("method", ["int4", "mixed", "mixed43", "lowrank"])
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


@pytest.mark.parametrize("budget", [5.2, 5.5, 5.9])  # width 16: int3 rows are 5 bits a weight, int4 rows 6
def test_budget_groups_fill_the_bits_per_weight_with_the_most_popular_items(tiny_data, budget):
    counts = training_counts(tiny_data)
    counts[1:] += 1  # every item seen: the budget alone decides how many are high
    dim = 16
    weight = torch.randn(len(counts), dim)
    groups = budget_groups(counts, dim, 4, 3, budget)
    size = table_bytes(quantized_table(weight, [4, 3], groups))
    assert size * 8 / (len(counts) * dim) <= budget  # codes, scales, offsets and membership together
    high = np.flatnonzero(groups == 0)
    assert counts[high].min() >= counts[np.flatnonzero(groups == 1)[1:]].max()
    one_more = groups.copy()
    one_more[np.flatnonzero(groups == 1)[1]] = 0  # one more int4 row would not fit (or every row is int4)
    assert len(high) == len(counts) - 1 or table_bytes(quantized_table(weight, [4, 3], one_more)) * 8 / (len(counts) * dim) > budget
    with pytest.raises(ValueError, match="bits per weight"):
        budget_groups(counts, dim, 4, 3, 4.0)


def test_error_allocation_keeps_the_size_and_saves_more_weighted_error_than_frequency(tiny_data):
    counts = training_counts(tiny_data)
    weight = torch.randn(len(counts), 16) * torch.rand(len(counts), 1) * 3  # rows of very different ranges
    by_frequency = budget_groups(counts, 16, 4, 3, 5.5)
    by_error = error_allocation(weight, counts, by_frequency, 4, 3)
    assert (by_error == 0).sum() == (by_frequency == 0).sum() and by_error[0] == 1  # same size, never padding
    assert table_bytes(quantized_table(weight, [4, 3], by_error)) == table_bytes(quantized_table(weight, [4, 3], by_frequency))

    def weighted_error(groups):
        error = ((quantized_table(weight, [4, 3], groups).weight - weight) ** 2).sum(1).numpy()
        return float((error * np.sqrt(1 + counts))[1:].sum())

    assert weighted_error(by_error) < weighted_error(by_frequency)
    assert not np.array_equal(by_error, by_frequency)


def test_fake_quant_table_trains_the_float_table_and_freezes_to_exactly_what_it_ran(tiny_model, tiny_data):
    weight = tiny_model.item_embeddings.weight.detach()
    groups = frequency_groups(training_counts(tiny_data), 0.6)
    fake = FakeQuantTable(weight, [4, 3], torch.from_numpy(groups))
    stored = quantized_table(weight, [4, 3], groups)
    assert torch.equal(fake.weight, stored.weight)  # before training: the table the stage compressed
    ids = torch.tensor([[0, 3, 7], [1, 2, 9]])
    states = torch.randn(2, weight.shape[1])
    loss = fake.score(states).logsumexp(1).sum() + fake(ids).pow(2).sum()
    loss.backward()
    assert fake.shadow.grad is not None and fake.shadow.grad[1:].abs().sum() > 0  # straight-through gradient
    with torch.no_grad():
        fake.shadow[1:] += torch.randn_like(fake.shadow[1:]) * 0.3
    frozen = fake.freeze()
    assert torch.equal(frozen.weight, fake.weight)  # re-quantized: what was validated is what is stored
    assert not torch.equal(frozen.weight, stored.weight)
    assert torch.equal(fake(ids), frozen(ids)) and torch.equal(fake(ids)[0, 0], torch.zeros(weight.shape[1]))


def test_a_lookup_dequantizes_its_rows_exactly_and_follows_a_new_membership(tiny_model, tiny_data):
    """forward(ids) dequantizes only the looked-up rows, through a cached row -> (group, index) map."""
    weight = tiny_model.item_embeddings.weight.detach()
    groups = frequency_groups(training_counts(tiny_data), 0.6)
    first = quantized_table(weight, [8, 4], groups)
    ids = torch.tensor([[0, 3, 7, 9], [1, 2, 3, len(groups) - 1]])
    assert torch.equal(first(ids), first.weight[ids])  # the same arithmetic as the whole table
    shuffled = groups[np.random.default_rng(0).permutation(len(groups))]  # same group sizes, other rows
    second = quantized_table(weight, [8, 4], shuffled)
    assert not torch.equal(second.weight[ids], first.weight[ids])
    first.load_state_dict(second.state_dict())  # the cached map is of the old membership
    assert torch.equal(first(ids), second.weight[ids]) and torch.equal(first.weight, second.weight)
    assert torch.equal(first(ids[:0]), torch.empty(0, 4, weight.shape[1]))

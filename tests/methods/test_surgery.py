import pytest
import torch

from compress.models import RecommenderConfig, SequentialRecommender, load_model, save_model
from compress.methods.surgery import keep_layers, prune_width
from tests.conftest import with_prompt

IDS = torch.tensor([[0, 0, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6]])
MASK = (IDS > 0).long()


@pytest.fixture
def gqa_model(tiny_data):
    """4 query heads sharing 2 kv heads: two kv groups of 2."""
    torch.manual_seed(0)
    config = RecommenderConfig(hidden_size=16, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=32,
                               num_items=tiny_data.num_items, max_len=20, dropout=0.0)
    return SequentialRecommender(config).eval()


def test_pruned_shapes_and_config_agree_and_reload(tmp_path, gqa_model):
    pruned = prune_width(gqa_model, num_heads=2, intermediate_size=20).eval()
    config = pruned.config
    assert (config.num_heads, config.num_kv_heads, config.intermediate_size, config.head_dim) == (2, 1, 20, 4)
    for layer in pruned.backbone.layers:
        attention, mlp = layer.self_attn, layer.mlp
        assert attention.q_proj.weight.shape == (2 * 4, 16) and attention.o_proj.weight.shape == (16, 2 * 4)
        assert attention.k_proj.weight.shape == attention.v_proj.weight.shape == (1 * 4, 16)
        assert mlp.gate_proj.weight.shape == mlp.up_proj.weight.shape == (20, 16) and mlp.down_proj.weight.shape == (16, 20)
    states = pruned.last_states(IDS, MASK)
    assert states.shape == (2, 16) and pruned.score(states).shape == (2, gqa_model.config.num_items + 1)
    save_model(pruned, tmp_path / "m")
    torch.testing.assert_close(load_model(tmp_path / "m").last_states(IDS, MASK), states, rtol=0, atol=0)


def test_kept_kv_group_keeps_its_query_heads(gqa_model):
    """GQA stays consistent: the kept kv head comes with exactly the query heads that shared it."""
    pruned = prune_width(gqa_model, num_heads=2, intermediate_size=32)
    for old, new in zip(gqa_model.backbone.layers, pruned.backbone.layers):
        kept = [g for g in range(2) if torch.equal(old.self_attn.k_proj.weight[g * 4:(g + 1) * 4], new.self_attn.k_proj.weight)]
        assert len(kept) == 1
        group = kept[0]
        torch.testing.assert_close(new.self_attn.q_proj.weight, old.self_attn.q_proj.weight[group * 8:(group + 1) * 8])
        torch.testing.assert_close(new.self_attn.v_proj.weight, old.self_attn.v_proj.weight[group * 4:(group + 1) * 4])
        torch.testing.assert_close(new.self_attn.o_proj.weight, old.self_attn.o_proj.weight[:, group * 8:(group + 1) * 8])


def test_nothing_pruned_is_numerically_identical(tiny_model):
    same = prune_width(tiny_model, num_heads=2, intermediate_size=32).eval()
    torch.testing.assert_close(same.last_states(IDS, MASK), tiny_model.last_states(IDS, MASK), rtol=0, atol=0)


def test_taylor_importance_uses_calibration_gradients(gqa_model):
    def losses(model):
        states, _ = model(IDS, MASK)
        yield states.pow(2).mean()

    pruned = prune_width(gqa_model, num_heads=2, intermediate_size=8, importance="taylor", calibration_losses=losses)
    assert pruned.config.intermediate_size == 8 and pruned.last_states(IDS, MASK).shape == (2, 16)
    with pytest.raises(ValueError, match="taylor importance needs calibration_losses"):
        prune_width(gqa_model, num_heads=2, intermediate_size=8, importance="taylor")


@pytest.mark.parametrize("heads, channels, message", [(3, 32, "multiple of 2"), (6, 32, "within 2..4"),
                                                      (4, 40, "within 1..32"), (4, 0, "within 1..32")])
def test_impossible_widths_are_rejected(gqa_model, heads, channels, message):
    with pytest.raises(ValueError, match=message):
        prune_width(gqa_model, num_heads=heads, intermediate_size=channels)


@pytest.mark.parametrize("importance", ["magnitude", "taylor"])
def test_depth_and_width_pruning_leave_a_prompt_untouched(gqa_model, importance):
    """A prompted model (an imported SLMRec teacher) keeps its instruction/response embeddings bit for bit."""
    prompted = with_prompt(gqa_model)

    def losses(model):  # Taylor gradients from the state after the response, as the prune stage takes them
        yield model.next_item_scores(IDS, MASK)[:, 1:].logsumexp(-1).mean()

    pruned = prune_width(keep_layers(prompted, [1]), num_heads=2, intermediate_size=20, importance=importance,
                         calibration_losses=losses).eval()
    assert (pruned.config.num_layers, pruned.config.num_heads, pruned.config.intermediate_size) == (1, 2, 20)
    for name, value in prompted.prompt_embeddings().items():
        assert torch.equal(pruned.prompt_embeddings()[name], value)
    assert torch.isfinite(pruned.next_item_scores(IDS, MASK)[:, 1:]).all()

import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from compress.errors import ArtifactError, RecipeError
from compress.models import (
    ModelShape,
    RecommenderConfig,
    SequentialRecommender,
    init_backbone_from_llama,
    load_model,
    save_model,
    shape_from_llama,
)


def test_left_padding_gives_the_unpadded_scores(tiny_model):
    seq = torch.tensor([[5, 9, 3, 7]])
    padded = torch.tensor([[0, 0, 0, 5, 9, 3, 7]])
    plain = tiny_model.score(tiny_model.last_states(seq, torch.ones_like(seq)))
    with_pad = tiny_model.score(tiny_model.last_states(padded, (padded > 0).long()))
    torch.testing.assert_close(plain, with_pad, atol=1e-5, rtol=1e-5)


def test_scores_cover_all_items_and_never_padding(tiny_model):
    ids = torch.tensor([[0, 1, 2], [3, 4, 5]])
    scores = tiny_model.score(tiny_model.last_states(ids, (ids > 0).long()))
    assert scores.shape == (2, tiny_model.config.num_items + 1)
    assert torch.isinf(scores[:, 0]).all() and torch.isfinite(scores[:, 1:]).all()


def test_item_dim_projection_and_untied_head():
    config = RecommenderConfig(num_items=30, max_len=8, hidden_size=16, num_heads=2, item_dim=24, tie_weights=False)
    model = SequentialRecommender(config).eval()
    ids = torch.tensor([[1, 2, 3]])
    states, hidden = model(ids, torch.ones_like(ids), output_hidden_states=True)
    assert states.shape == (1, 3, 24)
    assert len(hidden) == config.num_layers + 1
    assert model.item_table.shape == (31, 24) and model.item_table is not model.item_embeddings.weight


def test_shape_validation():
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        ModelShape(num_heads=4, num_kv_heads=3)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        ModelShape(hidden_size=30, num_heads=4)


def test_save_load_roundtrip(tmp_path, tiny_model):
    save_model(tiny_model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    ids = torch.tensor([[1, 2, 3, 4]])
    torch.testing.assert_close(tiny_model.last_states(ids, torch.ones_like(ids)), loaded.last_states(ids, torch.ones_like(ids)))
    assert loaded.config == tiny_model.config


def test_load_errors(tmp_path, tiny_model):
    with pytest.raises(ArtifactError, match="config.json is missing"):
        load_model(tmp_path)
    save_model(tiny_model, tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["hidden_size"] = 32
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="do not match"):
        load_model(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ArtifactError, match="cannot read"):
        load_model(tmp_path / "m")


@pytest.fixture
def llama_checkpoint(tmp_path):
    config = LlamaConfig(
        vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )
    torch.manual_seed(1)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "llama")
    return tmp_path / "llama"


def test_init_from_llama_copies_the_first_layers(llama_checkpoint):
    shape = shape_from_llama(ModelShape(num_layers=2, item_dim=16), llama_checkpoint)
    assert (shape.hidden_size, shape.num_heads, shape.num_kv_heads, shape.intermediate_size) == (32, 4, 2, 48)
    model = SequentialRecommender(RecommenderConfig(**shape.model_dump(), num_items=20, max_len=10))
    copied = init_backbone_from_llama(model, llama_checkpoint)
    assert "layers.1.mlp.up_proj.weight" in copied and not any(k.startswith("layers.2") for k in copied)
    source = LlamaForCausalLM.from_pretrained(llama_checkpoint).model
    for name in ("layers.0.self_attn.q_proj.weight", "layers.1.mlp.down_proj.weight", "norm.weight"):
        torch.testing.assert_close(model.backbone.state_dict()[name], source.state_dict()[name])
    assert model.input_proj.weight.shape == (32, 16)


def test_init_from_too_many_layers(llama_checkpoint):
    shape = shape_from_llama(ModelShape(num_layers=6), llama_checkpoint)
    model = SequentialRecommender(RecommenderConfig(**shape.model_dump(), num_items=20, max_len=10))
    with pytest.raises(RecipeError, match="has 4 layers"):
        init_backbone_from_llama(model, llama_checkpoint)


def test_hidden_dropout_drops_sublayer_outputs_in_training_only():
    shape = dict(num_items=30, max_len=8, hidden_size=16, num_heads=2, dropout=0.0)
    plain = SequentialRecommender(RecommenderConfig(**shape))
    dropped = SequentialRecommender(RecommenderConfig(**shape, hidden_dropout=0.5))
    assert list(dropped.state_dict()) == list(plain.state_dict())  # same parameters: loads, prunes and exports alike
    dropped.load_state_dict(plain.state_dict())
    ids = torch.tensor([[1, 2, 3, 4]])
    mask = torch.ones_like(ids)
    plain.eval(), dropped.eval()
    torch.testing.assert_close(dropped.last_states(ids, mask), plain.last_states(ids, mask))
    plain.train(), dropped.train()
    torch.testing.assert_close(plain.last_states(ids, mask), plain.last_states(ids, mask))  # no dropout at all
    torch.manual_seed(0)
    first = dropped.last_states(ids, mask)
    assert not torch.allclose(first, dropped.last_states(ids, mask))

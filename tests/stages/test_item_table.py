"""The item_table stage: recipe checks, and train -> item_table -> export -> int8 end to end."""

from __future__ import annotations

import json

import onnx
import pytest

from compress.errors import RecipeError
from compress.models import load_model
from compress.pipeline import RunOptions, run_recipe
from compress.recipe import validate_recipe
from tests.conftest import tiny_recipe

QUIET = RunOptions(show_progress=False, log=lambda _: None)


def recipe_with(tmp_path, *stages):
    recipe = tiny_recipe(tmp_path, epochs=1)
    recipe["stages"] += list(stages)
    recipe["bench"] = {"enabled": False}
    recipe["report"] = False
    return recipe


@pytest.mark.parametrize(
    "stages, message",
    [
        ([{"stage": "item_table", "method": "lowrank", "bits": 4}], "bits do not apply to method lowrank"),
        ([{"stage": "item_table", "method": "rowwise", "bits": 7}], "bits"),
        ([{"stage": "item_table", "method": "mixed", "coverage": 0.5, "bits_per_weight": 4}], "not both"),
        ([{"stage": "item_table", "method": "lowrank", "quantization_aware": False}], "do not apply to method lowrank"),
        ([{"stage": "item_table", "method": "lowrank", "clip": False}], "clip do not apply to method lowrank"),
        ([{"stage": "item_table"}, {"stage": "prune", "mlp_ratio": 0.5}], "cannot follow item_table"),
        ([{"stage": "export"}, {"stage": "item_table"}], "needs a torch model"),
    ],
)
def test_impossible_recipes_fail_before_any_work(tmp_path, stages, message):
    with pytest.raises(RecipeError, match=message):
        validate_recipe(recipe_with(tmp_path, *stages))


@pytest.mark.parametrize("stage", [
    {"stage": "item_table", "method": "mixed", "coverage": 0.9, "low_bits": 3},
    {"stage": "item_table", "method": "mixed", "bits_per_weight": 4.0, "allocation": "error"},
    {"stage": "item_table", "method": "lowrank", "rank": 8, "recovery": None},
    {"stage": "item_table", "method": "rowwise", "bits": 4},
])
def test_a_dumped_item_table_stage_validates_again(tmp_path, stage):
    """Derived recipes (seeds, controls) re-validate every field of a stage: defaults must not count as stray."""
    recipe = validate_recipe(recipe_with(tmp_path, stage))
    raw = recipe.model_dump(mode="json")
    assert validate_recipe(raw).stages[1] == recipe.stages[1]


def test_a_rank_wider_than_the_table_is_one_clear_error(tmp_path):
    recipe = validate_recipe(recipe_with(tmp_path, {"stage": "item_table", "method": "lowrank", "rank": 64, "recovery": None}))
    with pytest.raises(RecipeError, match="rank must be between 1 and the table width"):
        run_recipe(recipe, QUIET)


@pytest.mark.slow
def test_mixed_table_runs_recovers_exports_and_quantizes(tmp_path):
    recipe = recipe_with(
        tmp_path,
        {"stage": "item_table", "method": "mixed", "high_bits": 4, "low_bits": 3, "bits_per_weight": 5.5,
         "recovery": {"epochs": 1, "batch_size": 32, "max_steps_per_epoch": 2}},
        {"stage": "export", "top_k": 5, "item_chunk": 16, "exporter": "legacy", "incremental": True},
        {"stage": "quantize", "backend": "onnxruntime"},
    )
    manifest = run_recipe(validate_recipe(recipe), QUIET)
    names = [s["name"] for s in manifest["stages"]]
    assert names == ["train", "item_table", "export", "quantize"]
    table = manifest["stages"][1]
    assert table["info"]["table_bytes"] * 8 <= table["info"]["table_bytes_fp32"] / 4 * 5.5  # within the budget
    assert "ndcg@10" in table["info"]["metrics_before_recovery"] and table["info"]["recovery_epochs_run"] == 1
    assert table["info"]["quantization_aware_recovery"] and isinstance(table["info"]["recovery_kept"], bool)
    run = tmp_path / "artifacts" / "tiny"
    model = load_model(run / table["output"])
    assert model.config.table.method == "mixed" and model.config.table.group_bits == [4, 3]
    metadata = json.loads((run / manifest["stages"][2]["output"] / "metadata.json").read_text())
    assert metadata["item_table"]["method"] == "mixed" and metadata["item_chunk"] == 16
    parity = json.loads((run / manifest["stages"][2]["output"] / "parity.json").read_text())
    assert parity["passed"] and parity["step"]["identical_topk"] == 1.0 and parity["step"]["max_abs_diff"] <= 1e-4
    step_graph = onnx.load(str(run / manifest["stages"][2]["output"] / "step.onnx"))
    assert not any(tuple(t.dims) == (model.config.num_items + 1, model.config.item_dim)
                   and t.data_type == onnx.TensorProto.FLOAT for t in step_graph.graph.initializer)
    assert manifest["stages"][3]["metrics"]["ndcg@10"] > 0


@pytest.mark.parametrize("helps", [False, True])
def test_recovery_is_kept_only_when_it_beats_the_model_before_on_validation(tiny_model, tiny_data, tmp_path, monkeypatch, helps):
    import copy

    import torch

    from compress.evaluation.metrics import EvalConfig
    from compress.stages.base import StageContext, recover
    from compress.stages.config import Recovery
    from compress.training import loop
    from compress.training.loop import TrainResult, validate

    ctx = StageContext(tiny_data, 20, EvalConfig(), torch.device("cpu"), 0, tmp_path, log=lambda _: None)
    model = copy.deepcopy(tiny_model)
    before = validate(model, tiny_data, EvalConfig(), torch.device("cpu"))["ndcg@10"]

    def fake_fit(model, loss_fn, data, config, train_ctx):  # a recovery that wrecks the weights
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        return TrainResult(before + (0.1 if helps else -0.1), 1, 1, 0.0, [{"epoch": 1}])

    monkeypatch.setattr(loop, "fit", fake_fit)
    info = recover(ctx, model, tiny_model, Recovery(epochs=1), None)
    assert info["recovery_kept"] is helps
    assert info["recovery_valid_ndcg@10_before"] == pytest.approx(before)
    same = all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), tiny_model.state_dict().values()))
    assert same is not helps  # not kept: exactly the model before recovery

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
        ([{"stage": "item_table", "method": "rowwise", "bits": 3}], "bits"),
        ([{"stage": "item_table"}, {"stage": "prune", "mlp_ratio": 0.5}], "cannot follow item_table"),
        ([{"stage": "export"}, {"stage": "item_table"}], "needs a torch model"),
    ],
)
def test_impossible_recipes_fail_before_any_work(tmp_path, stages, message):
    with pytest.raises(RecipeError, match=message):
        validate_recipe(recipe_with(tmp_path, *stages))


def test_a_rank_wider_than_the_table_is_one_clear_error(tmp_path):
    recipe = validate_recipe(recipe_with(tmp_path, {"stage": "item_table", "method": "lowrank", "rank": 64, "recovery": None}))
    with pytest.raises(RecipeError, match="rank must be between 1 and the table width"):
        run_recipe(recipe, QUIET)


@pytest.mark.slow
def test_mixed_table_runs_recovers_exports_and_quantizes(tmp_path):
    recipe = recipe_with(
        tmp_path,
        {"stage": "item_table", "method": "mixed", "high_bits": 8, "low_bits": 2,
         "recovery": {"epochs": 1, "batch_size": 32, "max_steps_per_epoch": 2}},
        {"stage": "export", "top_k": 5, "item_chunk": 16, "exporter": "legacy", "incremental": True},
        {"stage": "quantize", "backend": "onnxruntime"},
    )
    manifest = run_recipe(validate_recipe(recipe), QUIET)
    names = [s["name"] for s in manifest["stages"]]
    assert names == ["train", "item_table", "export", "quantize"]
    table = manifest["stages"][1]
    assert table["info"]["table_bytes"] < table["info"]["table_bytes_fp32"] / 2
    assert "ndcg@10" in table["info"]["metrics_before_recovery"] and table["info"]["recovery_epochs_run"] == 1
    run = tmp_path / "artifacts" / "tiny"
    model = load_model(run / table["output"])
    assert model.config.table.method == "mixed" and model.config.table.group_bits == [8, 2]
    metadata = json.loads((run / manifest["stages"][2]["output"] / "metadata.json").read_text())
    assert metadata["item_table"]["method"] == "mixed" and metadata["item_chunk"] == 16
    parity = json.loads((run / manifest["stages"][2]["output"] / "parity.json").read_text())
    assert parity["passed"] and parity["step"]["identical_topk"] == 1.0 and parity["step"]["max_abs_diff"] <= 1e-4
    step_graph = onnx.load(str(run / manifest["stages"][2]["output"] / "step.onnx"))
    assert not any(tuple(t.dims) == (model.config.num_items + 1, model.config.item_dim)
                   and t.data_type == onnx.TensorProto.FLOAT for t in step_graph.graph.initializer)
    assert manifest["stages"][3]["metrics"]["ndcg@10"] > 0

from dataclasses import replace

import pytest
import torch

from compress.errors import RecipeError
from compress.models import RecommenderConfig, load_model
from compress.pipeline import RunOptions, run_recipe
from compress.methods.pruning import PruneTargets, count_parameters, plan_pruning
from compress.recipe import validate_recipe
from tests.conftest import tiny_recipe

QUIET = RunOptions(show_progress=False, log=lambda _: None)
GQA = RecommenderConfig(hidden_size=32, num_layers=4, num_heads=4, num_kv_heads=2, intermediate_size=64,
                        num_items=60, max_len=20)


def prune_recipe(tmp_path, *stages, **model):
    raw = tiny_recipe(tmp_path, epochs=1)
    raw["stages"][0]["model"] = {**raw["stages"][0]["model"], "num_layers": 3, "num_heads": 4, "num_kv_heads": 2, **model}
    raw["stages"].extend(stages)
    return raw


def output(tmp_path, entry):
    return load_model(tmp_path / "artifacts" / "tiny" / entry["output"])


def test_train_then_prune_with_recovery(tmp_path):
    prune = {"stage": "prune", "remove_layers": 1, "num_heads": 2, "mlp_ratio": 0.5, "calibration_batches": 2,
             "recovery": {"epochs": 1, "batch_size": 32, "max_steps_per_epoch": 2}}
    manifest = run_recipe(validate_recipe(prune_recipe(tmp_path, prune)), QUIET)
    train, pruned = manifest["stages"]
    model = output(tmp_path, pruned)
    assert (model.config.num_layers, model.config.num_heads, model.config.num_kv_heads) == (2, 2, 1)
    assert model.config.intermediate_size == 16
    info = pruned["info"]
    assert info["params_before"] == train["params"] and info["params_after"] == pruned["params"] < train["params"]
    assert len(info["layers_kept"]) == 2 and len(info["layers_removed"]) == 1 and len(info["block_influence"]) == 3
    assert info["recovery_epochs_run"] == 1 and set(info["metrics_before_recovery"]) >= {"ndcg@10", "hr@10"}


def test_train_distill_prune_with_zero_ratio_is_identical(tmp_path):
    distill = {"stage": "distill", "num_layers": 2, "epochs": 1, "batch_size": 32, "max_steps_per_epoch": 2}
    prune = {"stage": "prune", "mlp_ratio": 0.0, "head_ratio": 0.0, "recovery": None}
    manifest = run_recipe(validate_recipe(prune_recipe(tmp_path, distill, prune)), QUIET)
    _, student, pruned = manifest["stages"]
    before, after = output(tmp_path, student), output(tmp_path, pruned)
    assert after.config == before.config
    for (name, a), (_, b) in zip(before.state_dict().items(), after.state_dict().items()):
        assert torch.equal(a, b), name
    assert pruned["metrics"] == student["metrics"] == pruned["info"]["metrics_before_recovery"]


@pytest.mark.parametrize("targets, message", [
    ({"num_heads": 6}, "num_heads asks to keep 6 but the model has 4"),
    ({"num_heads": 3}, "must be a multiple of 2"),
    ({"num_layers": 9}, "keep 9 layers but the model has 3"),
    ({"remove_layers": 3}, "would remove every one of the model's 3 layers"),
    ({"intermediate_size": 100}, "intermediate_size asks to keep 100 but the model has 32"),
    ({"target_params": 0.01}, "target_params 0.01 cannot be reached"),
])
def test_bad_targets_are_a_recipe_error_before_any_work(tmp_path, targets, message):
    recipe = validate_recipe(prune_recipe(tmp_path, {"stage": "prune", **targets}))
    with pytest.raises(RecipeError, match=message):
        run_recipe(recipe, QUIET)


@pytest.mark.parametrize("targets, message", [
    ({"num_heads": 2, "head_ratio": 0.5}, "set num_heads or head_ratio, not both"),
    ({"target_params": 0.5, "num_layers": 2}, "target_params decides the counts itself: drop num_layers"),
    ({}, "nothing to prune"),
    ({"mlp_ratio": 1.0}, "less than 1"),
    ({"head_ratio": -0.1}, "greater than or equal to 0"),
    ({"num_layers": 0}, "greater than or equal to 1"),
])
def test_inconsistent_targets_fail_validation(tmp_path, targets, message):
    with pytest.raises(RecipeError, match=message):
        validate_recipe(prune_recipe(tmp_path, {"stage": "prune", **targets}))


def test_ratios_become_counts():
    plan = plan_pruning(PruneTargets(head_ratio=0.5, mlp_ratio=0.25, num_layers=2), GQA)
    assert (plan.num_layers, plan.num_heads, plan.num_kv_heads, plan.intermediate_size) == (2, 2, 1, 48)
    with pytest.raises(RecipeError, match="removes all 2 prunable units"):
        plan_pruning(PruneTargets(head_ratio=0.9), GQA)


@pytest.mark.parametrize("dims", [["layers"], ["heads", "mlp"], ["layers", "heads", "mlp"]])
@pytest.mark.parametrize("fraction", [0.5, 0.8])
def test_target_params_lands_near_the_budget(dims, fraction):
    plan = plan_pruning(PruneTargets(target_params=fraction, budget_dims=dims), GQA)
    kept = count_parameters(plan.apply_to(GQA)) / count_parameters(GQA)
    assert kept <= fraction
    if dims == ["layers"]:  # depth alone moves in whole layers: one more would break the budget
        deeper = replace(plan, num_layers=plan.num_layers + 1)
        assert count_parameters(deeper.apply_to(GQA)) > fraction * count_parameters(GQA)
    else:
        assert kept > fraction - 0.05
    assert plan.num_heads % plan.num_kv_heads == 0
    untouched = {"layers": plan.num_layers == 4, "heads": plan.num_heads == 4, "mlp": plan.intermediate_size == 64}
    assert all(untouched[d] for d in untouched if d not in dims)

import pytest
import torch

from compress.errors import RecipeError
from compress.models import RecommenderConfig, SequentialRecommender, save_model
from compress.pipeline import RunOptions, run_recipe
from compress.recipe import validate_recipe
from tests.conftest import TINY_MODEL, tiny_recipe

QUIET = RunOptions(show_progress=False, log=lambda _: None)


def load_recipe_dict(tmp_path, model_path):
    raw = tiny_recipe(tmp_path)
    raw["stages"] = [{"stage": "load", "path": str(model_path)}]
    raw["bench"] = {"enabled": False}
    return raw


def test_load_starts_a_chain_from_another_runs_model(tmp_path):
    teacher = run_recipe(validate_recipe({**tiny_recipe(tmp_path), "bench": {"enabled": False}}), QUIET)
    model_path = tmp_path / "artifacts" / "tiny" / teacher["stages"][0]["output"]
    raw = load_recipe_dict(tmp_path, model_path)
    raw["name"] = "loaded"
    manifest = run_recipe(validate_recipe(raw), QUIET)
    assert manifest["stages"][0]["metrics"] == teacher["stages"][0]["metrics"]
    assert manifest["stages"][0]["params"] == teacher["stages"][0]["params"]


def test_changed_weights_invalidate_the_cache(tmp_path, tiny_data):
    config = RecommenderConfig(**TINY_MODEL, num_items=tiny_data.num_items, max_len=20)
    torch.manual_seed(1)
    save_model(SequentialRecommender(config), tmp_path / "m")
    messages = []
    options = RunOptions(show_progress=False, log=messages.append)
    first = run_recipe(validate_recipe(load_recipe_dict(tmp_path, tmp_path / "m")), options)
    torch.manual_seed(2)
    save_model(SequentialRecommender(config), tmp_path / "m")  # new random weights, same path
    messages.clear()
    second = run_recipe(validate_recipe(load_recipe_dict(tmp_path, tmp_path / "m")), options)
    assert not any(": cached" in m for m in messages)
    assert second["stages"][0]["config_hash"] != first["stages"][0]["config_hash"]


def test_load_errors(tmp_path, tiny_data):
    with pytest.raises(RecipeError, match="is not a model folder"):
        validate_recipe(load_recipe_dict(tmp_path, tmp_path))
    config = RecommenderConfig(**TINY_MODEL, num_items=tiny_data.num_items + 5, max_len=20)
    save_model(SequentialRecommender(config), tmp_path / "other")
    with pytest.raises(RecipeError, match="scores 65 items but the recipe's data has 60"):
        run_recipe(validate_recipe(load_recipe_dict(tmp_path, tmp_path / "other")), QUIET)

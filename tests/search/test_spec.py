from pathlib import Path

import pytest
import yaml

from compress.errors import RecipeError
from compress.search.space import candidate_id, decode_params, grid, make_sampler
from compress.search.spec import SearchSpec, apply_params, keys_off_base, load_spec
from tests.search.specs import tiny_spec, write_spec
from tests.test_bad_inputs import run_in_process


def test_a_valid_spec_loads_with_its_base_recipe(tmp_path):
    spec, base = load_spec(write_spec(tmp_path, tiny_spec(tmp_path)))
    assert spec.objective == "bytes" and base["name"] == "base"
    assert spec.constraints.drop == "relative" and spec.bootstrap.confidence == 0.95


def test_the_base_recipe_may_be_a_path_with_overrides(tmp_path):
    recipe = tiny_spec(tmp_path)["recipe"]
    recipe_path = write_spec(tmp_path, recipe, "recipe.yaml")
    spec = tiny_spec(tmp_path, recipe=str(recipe_path), set=["stages.train.epochs=2"])
    _, base = load_spec(write_spec(tmp_path, spec))
    assert base["stages"][0]["epochs"] == 2


@pytest.mark.parametrize("change, message", [
    ({"colour": 1}, "colour: unknown key"),
    ({"space": {}}, "space: Dictionary should have at least 1 item"),
    ({"space": {"stages.prune.bogus": [1]}}, "space.stages.prune.bogus=1 is invalid"),
    ({"space": {"stages.prune.mlp_ratio": [0.5, 1.5]}}, "space.stages.prune.mlp_ratio=1.5 is invalid"),
    ({"space": {"stages.prune.mlp_ratio": {"low": 0.9, "high": 0.1}}}, "high (0.1) is below low (0.9)"),
    ({"space": {"data.max_len": [10, 20]}}, "data, eval, seed, name, output_dir and device are fixed"),
    ({"space": {"drop_stages": [[], ["quantize"]]}}, "no stage named ['quantize']"),
    ({"space": {"drop_stages": [[], ["prun"]]}}, "no stage named ['prun'] in the recipe ['train', 'prune']; did you mean 'prune'?"),
    ({"space": {"drop_stages": ["prune"]}}, "a list of stage lists"),
    ({"space": {"drop_stages": [["train"]]}}, "stages.0 (prune) needs a torch model"),
    ({"constraints": {"max_ndcg_drop": -1}}, "constraints.max_ndcg_drop: Input should be greater than 0"),
    ({"constraints": {}}, "constraints.max_ndcg_drop: Field required"),
    ({"objective": "speed"}, "objective: Input should be 'p50', 'throughput' or 'bytes'"),
    ({"budget": {"trials": None}}, "give trials, minutes or both"),
])
def test_bad_specs_are_one_message(tmp_path, change, message):
    with pytest.raises(RecipeError) as error:
        load_spec(write_spec(tmp_path, tiny_spec(tmp_path, **change)))
    assert message in str(error.value)


def test_a_bad_base_recipe_names_the_recipe(tmp_path):
    spec = tiny_spec(tmp_path)
    spec["recipe"]["stages"][0]["epochs"] = 0
    with pytest.raises(RecipeError, match=r"(?s)spec.yaml: recipe is invalid.*epochs"):
        load_spec(write_spec(tmp_path, spec))


def test_cli_bad_spec_exits_2_without_traceback(tmp_path, capsys):
    code, _ = run_in_process(["search", str(write_spec(tmp_path, tiny_spec(tmp_path, objective="speed")))])
    output = capsys.readouterr()
    assert code == 2 and "objective" in output.err and "Traceback" not in output.out + output.err
    code, _ = run_in_process(["search", str(tmp_path / "missing.yaml")])
    assert code == 2 and "search spec not found" in capsys.readouterr().err


def test_drop_stages_and_overrides_apply_to_the_recipe(tmp_path):
    base = tiny_spec(tmp_path)["recipe"]
    raw = apply_params(base, {"stages.prune.mlp_ratio": 0.25, "drop_stages": ["prune"]})
    assert [s["stage"] for s in raw["stages"]] == ["train"] and base["stages"][1]["mlp_ratio"] == 0.5
    raw = apply_params(base, {"stages.prune.mlp_ratio": 0.25, "drop_stages": []})
    assert raw["stages"][1]["mlp_ratio"] == 0.25


def test_grid_encodes_stage_lists_and_auto_picks_grid_only_when_it_fits(tmp_path):
    spec = SearchSpec.model_validate(tiny_spec(tmp_path, space={
        "drop_stages": [[], ["prune"]], "stages.prune.mlp_ratio": {"low": 0.0, "high": 0.5, "step": 0.25},
    }))
    assert grid(spec) == {"drop_stages": ["none", "prune"], "stages.prune.mlp_ratio": [0.0, 0.25, 0.5]}
    assert decode_params({"drop_stages": "prune", "x": 1}) == {"drop_stages": ["prune"], "x": 1}
    assert make_sampler(spec, 0)[1].startswith("TPE")  # 6 points > 4 trials
    spec.budget.trials = 6
    assert make_sampler(spec, 0)[1] == "grid (6 points)"
    spec.space["stages.prune.mlp_ratio"].step = None  # a float range without a step cannot be a grid
    assert grid(spec) is None and make_sampler(spec, 0)[1].startswith("TPE")


def test_candidate_id_is_the_recipe_the_values_make():
    base = {"name": "x", "stages": [{"stage": "distill", "num_layers": 2}, {"stage": "prune", "mlp_ratio": 0.5}]}
    ids = {ratio: candidate_id(apply_params(base, {"stages.prune.mlp_ratio": ratio})) for ratio in (0.25, 0.5)}
    assert ids[0.25] != ids[0.5] and ids[0.5] == candidate_id(apply_params(base, {}))
    dropped = [candidate_id(apply_params(base, {"stages.prune.mlp_ratio": r, "drop_stages": ["prune"]})) for r in (0.25, 0.5)]
    assert dropped[0] == dropped[1] != ids[0.5]  # a ratio of a dropped stage is one candidate


def test_the_shipped_quickstart_search_is_valid(monkeypatch):
    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(root)  # its base recipe path is relative to the repository root
    spec, base = load_spec(root / "recipes" / "examples" / "quickstart_search.yaml")
    assert grid(spec) is not None and make_sampler(spec, 0)[1].startswith("grid")
    assert base["stages"][0]["epochs"] == 3


@pytest.mark.realdata
def test_the_shipped_ml1m_search_is_valid(monkeypatch):
    root = Path(__file__).resolve().parents[2]
    found = [p / "shared" / "datasets" / "ml-1m.txt" for p in root.parents if (p / "shared" / "datasets" / "ml-1m.txt").is_file()]
    if not found:
        pytest.skip("needs shared/datasets/ml-1m.txt")
    monkeypatch.chdir(root)
    spec, base = load_spec(root / "recipes" / "studies" / "ml1m_search.yaml", [f"set=['data.path={found[0]}']"])
    assert spec.constraints.max_ndcg_drop == 0.02 and make_sampler(spec, 0)[1] == "grid (8 points)"
    assert base["data"]["path"] == str(found[0])
    for path in sorted((root / "recipes").rglob("*search*.yaml")):  # every shipped spec loads
        sets = [*(yaml.safe_load(path.read_text()).get("set") or []), f"data.path={found[0]}"]
        load_spec(path, [f"set={sets}"] if "ml1m" in path.name else [])


def test_a_value_valid_only_with_another_entrys_value_is_accepted(tmp_path):
    spec = tiny_spec(tmp_path, space={"stages.distill.num_layers": [1]})
    spec["recipe"]["stages"][0]["model"] = {**spec["recipe"]["stages"][0]["model"], "num_layers": 3}
    spec["recipe"]["stages"].insert(1, {"stage": "distill", "num_layers": 2, "blocks": 2, "epochs": 1})
    with pytest.raises(RecipeError, match="blocks \\(2\\) must be at most the student's layers \\(1\\)"):
        load_spec(write_spec(tmp_path, spec))
    spec["space"]["stages.distill.blocks"] = [1, 2]  # num_layers 1 works with blocks 1: a valid pair exists
    load_spec(write_spec(tmp_path, spec))


def test_cli_reports_spec_mistakes_before_importing_torch(tmp_path):
    from tests.test_recipe import BLOCK_HEAVY, _python

    write_spec(tmp_path, tiny_spec(tmp_path, space={"stages.prune.mlp_ratio": [2.0]}), "bad.yaml")
    code = BLOCK_HEAVY + "from compress.cli import main\nsys.argv = ['compress', 'search', 'bad.yaml']\nmain()\n"
    result = _python(code, tmp_path)  # importing torch or transformers would be a traceback, exit 1
    assert result.returncode == 2, result.stderr
    assert "space.stages.prune.mlp_ratio=2.0 is invalid" in result.stderr and "Traceback" not in result.stderr


def test_a_base_recipe_outside_the_space_is_named(tmp_path):
    spec, base = load_spec(write_spec(tmp_path, tiny_spec(tmp_path)))  # the base's ratio 0.5 is a choice
    assert keys_off_base(spec, base) == []
    spec, base = load_spec(write_spec(tmp_path, tiny_spec(tmp_path, space={
        "stages.prune.mlp_ratio": [0.25, 0.75],  # 0.5 is not among them
        "stages.prune.remove_layers": [0],  # unset in the base: even 0 (no change) is a different recipe
        "drop_stages": [[], ["prune"]],
    })))
    assert keys_off_base(spec, base) == ["stages.prune.mlp_ratio", "stages.prune.remove_layers"]

"""Control rows (scratch, teacher-onnx), seeds and paired intervals: recipe derivation and a tiny headline run."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from compress.studies.controls import (
    converged_budget,
    run_controls,
    scratch_raw,
    seed_raw,
    size_matched_raw,
    size_matched_shape,
    student_budget,
    teacher_onnx_raw,
)
from compress.models.config import RecommenderConfig
from compress.models.recommender import SequentialRecommender
from compress.pipeline import RunOptions
from compress.stages.config import LoadConfig
from compress.errors import RecipeError
from compress.recipe import validate_recipe
from tests.conftest import TINY_BENCH, tiny_recipe

ROOT = Path(__file__).resolve().parents[1]


def student_recipe(tmp_path, distill_epochs=1, recovery_epochs=1):
    raw = tiny_recipe(tmp_path, epochs=1)
    raw["name"] = "ctl"
    raw["stages"] += [
        {"stage": "distill", "num_layers": 1, "epochs": distill_epochs, "batch_size": 32, "lr": 0.004},
        {"stage": "prune", "mlp_ratio": 0.5, "recovery": {"epochs": recovery_epochs, "batch_size": 32}},
        {"stage": "export", "top_k": 5},
    ]
    raw["bench"] = dict(TINY_BENCH)
    return raw


def test_the_scratch_budget_is_the_students_epochs_and_never_less(tmp_path):
    recipe = validate_recipe(student_recipe(tmp_path, distill_epochs=4, recovery_epochs=2))
    budget = student_budget(recipe)
    assert budget.epochs == 6 and budget.parts == {"distill": 4, "prune recovery": 2}
    assert "6 epochs = distill 4 + prune recovery 2" in budget.describe()
    assert student_budget(recipe, 9).epochs == 9 and "raised" in student_budget(recipe, 9).describe()
    with pytest.raises(RecipeError, match="below the student's training budget"):
        student_budget(recipe, 5)
    assert student_budget(validate_recipe(tiny_recipe(tmp_path))) is None  # a teacher alone: no student


def test_derived_recipes_keep_the_teacher_and_the_data(tmp_path):
    recipe = validate_recipe(student_recipe(tmp_path, distill_epochs=3))
    run_dir = tmp_path / "artifacts" / "ctl"
    model = run_dir / "03-prune" / "model"
    model.mkdir(parents=True)
    shape = {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "num_kv_heads": 2, "intermediate_size": 16}
    (model / "config.json").write_text(json.dumps({**shape, "num_items": 60, "max_len": 20}))
    manifest = {"stages": [{"output": "01-train/model"}, {"output": "02-distill/model"}, {"output": "03-prune/model"}]}

    onnx = teacher_onnx_raw(recipe)
    assert [s["stage"] for s in onnx["stages"]] == ["train", "export"] and onnx["stages"][1]["top_k"] == 5
    assert onnx["stages"][0] == recipe.stages[0].model_dump(mode="json")  # same teacher stage: cached
    scratch = scratch_raw(recipe, run_dir, manifest, student_budget(recipe), seed=1)
    train = scratch["stages"][0]
    assert [s["stage"] for s in scratch["stages"]] == ["train", "export"] and scratch["name"] == "ctl-scratch-seed1"
    assert {k: train["model"][k] for k in shape} == shape and train["epochs"] == 4 and train["lr"] == 0.004
    assert scratch["seed"] == 1 and scratch["data"]["synthetic"]["seed"] == 0  # same data, other training seed
    assert not scratch["bench"]["enabled"]
    seeded = seed_raw(recipe, run_dir, manifest, seed=2)
    assert seeded["stages"][0] == {"stage": "load", "path": str(run_dir / "01-train/model")}
    assert [s["stage"] for s in seeded["stages"][1:]] == ["distill", "prune", "export"]


def test_scratch_converged_is_the_scratch_recipe_with_a_large_cap_and_early_stopping(tmp_path):
    raw = student_recipe(tmp_path, distill_epochs=4, recovery_epochs=2)
    raw["stages"][0]["patience"] = 5  # the teacher's from-scratch patience is larger than distill's (3)
    recipe = validate_recipe(raw)
    budget = student_budget(recipe)
    long = converged_budget(recipe, budget)
    assert long.epochs == 40 and long.patience == 5 and long.converged  # max(4 x 6, 40)
    longer = validate_recipe(student_recipe(tmp_path, distill_epochs=10, recovery_epochs=2))
    assert converged_budget(longer, student_budget(longer)).epochs == 48  # 4 x the student's budget wins
    assert converged_budget(recipe, student_budget(recipe, 12)).epochs == 40  # the cap follows the student, not --scratch-epochs
    assert converged_budget(recipe, budget, 9).epochs == 9
    with pytest.raises(RecipeError, match="below the scratch control"):
        converged_budget(recipe, budget, 5)
    assert "early stopping on validation NDCG@10 after 5 evaluations" in long.describe()
    assert long.as_dict() == {"epochs": 40, "student": {"distill": 4, "prune recovery": 2}, "patience": 5, "converged": True}

    run_dir = tmp_path / "artifacts" / "ctl"
    model = run_dir / "03-prune" / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text(json.dumps({"hidden_size": 16, "num_layers": 1, "num_heads": 2,
                                                   "intermediate_size": 16, "num_items": 60, "max_len": 20}))
    manifest = {"stages": [{"output": "01-train/model"}, {"output": "02-distill/model"}, {"output": "03-prune/model"}]}
    scratch = scratch_raw(recipe, run_dir, manifest, budget, seed=0)
    converged = scratch_raw(recipe, run_dir, manifest, long, seed=0)
    assert converged["name"] == "ctl-scratch-converged" and scratch["name"] == "ctl-scratch"
    assert converged["stages"][0] == {**scratch["stages"][0], "epochs": 40, "patience": 5}  # nothing else differs
    assert converged["stages"][1:] == scratch["stages"][1:] and converged["data"] == scratch["data"]
    raw["stages"][0]["patience"] = 0  # both "never stop": scratch-converged still stops (the default patience)
    raw["stages"][1]["patience"] = 0
    assert converged_budget(validate_recipe(raw), budget).patience == 3


TEACHER = {"hidden_size": 64, "num_layers": 2, "num_heads": 1, "num_kv_heads": 1, "head_dim": 64,
           "intermediate_size": 128, "item_dim": 64, "dropout": 0.5}


def float_bytes(shape: dict, num_items: int = 500, max_len: int = 20) -> int:
    return 4 * SequentialRecommender(RecommenderConfig(**shape, num_items=num_items, max_len=max_len)).num_parameters()


def test_size_matched_shape_is_the_widest_narrowing_that_fits():
    budget = float_bytes(TEACHER) // 3
    shape = size_matched_shape(TEACHER, 500, 20, budget)
    width = shape["hidden_size"]
    assert width % 8 == 0 and 8 <= width < 64 and float_bytes(shape) <= budget
    assert shape["item_dim"] == width and shape["num_layers"] == 2 and shape["num_heads"] == 1
    assert shape["head_dim"] == width and shape["intermediate_size"] == 2 * width  # scaled like the hidden width
    wider = size_matched_shape(TEACHER, 500, 20, float_bytes(TEACHER) - 1)  # brute force: every width that fits
    fits = [w for w in range(8, 64, 8) if float_bytes({**shape, "hidden_size": w, "item_dim": w, "head_dim": w,
                                                         "intermediate_size": 2 * w}) <= budget]
    assert width == max(fits) and wider["hidden_size"] == 56
    assert size_matched_shape(TEACHER, 500, 20, 1000) is None  # not even width 8 fits


TINY_MODEL_WIDE = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 32}


def table_recipe(tmp_path) -> dict:
    raw = tiny_recipe(tmp_path, epochs=1, model={**TINY_MODEL_WIDE})
    raw["name"] = "tab"
    raw["stages"] += [{"stage": "item_table", "method": "rowwise", "bits": 4}, {"stage": "export", "top_k": 5}]
    raw["bench"] = dict(TINY_BENCH)
    return raw



def test_size_matched_scratch_repeats_the_teacher_stage_narrower(tmp_path):
    recipe = validate_recipe(table_recipe(tmp_path))
    assert student_budget(recipe) is None  # no distill or prune: the shape control does not apply
    run_dir = tmp_path / "artifacts" / "tab"
    model = run_dir / "01-train" / "model"
    model.mkdir(parents=True)
    teacher = {**TEACHER, "num_items": 500, "max_len": 20}
    (model / "config.json").write_text(json.dumps(teacher))
    (model / "model.safetensors").write_bytes(b"")  # the seed recipes' load stage checks that the folder holds both
    final = float_bytes(TEACHER) // 2
    manifest = {"stages": [{"output": "01-train/model"}, {"output": "02-item_table/model"},
                           {"output": "03-export/onnx", "size_bytes": final}]}
    raw, why = size_matched_raw(recipe, run_dir, manifest, seed=2)
    train, export = raw["stages"]
    assert train["stage"] == "train" and export == recipe.stages[2].model_dump(mode="json")
    assert {k: v for k, v in train.items() if k != "model"} == {
        k: v for k, v in recipe.stages[0].model_dump(mode="json").items() if k != "model"}  # the teacher's recipe
    assert float_bytes(train["model"]) <= final < float_bytes(TEACHER)
    assert raw["name"] == "tab-scratch-seed2" and raw["seed"] == 2
    assert "size-matched" in why and f"{final:,} bytes" in why and f"width {train['model']['hidden_size']}" in why
    seeded = validate_recipe(seed_raw(recipe, run_dir, manifest, seed=1))  # an item_table stage re-validates
    assert [s.stage for s in seeded.stages] == ["load", "item_table", "export"] and seeded.stages[1] == recipe.stages[1]
    load = LoadConfig.model_construct(stage="load", path=model)  # a loaded teacher: no train stage to repeat
    loaded = recipe.model_copy(update={"stages": [load, *recipe.stages[1:]]})
    raw, why = size_matched_raw(loaded, run_dir, manifest, seed=0)
    assert raw is None and why.startswith("not run: the teacher was loaded")


@pytest.mark.slow
def test_an_item_table_run_gets_a_size_matched_scratch_no_larger_than_it(tmp_path):
    recipe = validate_recipe(table_recipe(tmp_path))
    runs = run_controls(recipe, RunOptions(show_progress=False), seeds=1)
    assert set(runs.scratch) == {0} and "size-matched" in runs.notes["scratch"]
    main = json.loads((runs.run_dir / "manifest.json").read_text())["stages"]
    scratch = json.loads((runs.scratch[0] / "manifest.json").read_text())["stages"]
    assert [s["name"] for s in scratch] == ["train", "export"]
    shape = json.loads((runs.scratch[0] / scratch[0]["output"] / "config.json").read_text())
    assert shape["hidden_size"] < 32 and shape["item_dim"] == shape["hidden_size"]
    assert 4 * scratch[0]["params"] <= main[-1]["size_bytes"]  # its float32 weights fit in the final artifact


def _headline_module():
    spec = importlib.util.spec_from_file_location("headline", ROOT / "benchmarks" / "headline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_tiny_headline_has_both_control_rows_seeds_and_intervals(tmp_path, monkeypatch):
    raw = tiny_recipe(tmp_path, epochs=1)
    raw["name"] = "tinyhead"
    raw["stages"] += [{"stage": "distill", "num_layers": 1, "epochs": 1, "batch_size": 32, "patience": 1},
                      {"stage": "export"}]
    raw["stages"][0]["patience"] = 1
    raw["bench"] = dict(TINY_BENCH)
    path = tmp_path / "tiny.yaml"
    path.write_text(json.dumps(raw))
    results = tmp_path / "results"
    monkeypatch.setattr(sys, "argv", ["headline.py", "--recipe", str(path), "--runs", str(tmp_path / "runs"),
                                      "--results", str(results), "--seeds", "2", "--device", "cpu",
                                      "--converged-epochs", "30", "--no-peers"])
    assert _headline_module().main() == 0

    out = json.loads((results / "tinyhead" / "headline.json").read_text())
    stages, controls = out["stages"], {c["name"]: c for c in out["controls"]}
    assert [c["name"] for c in out["controls"]] == ["scratch", "scratch-converged", "teacher-onnx"]
    for control in controls.values():
        assert {"run", "stage", "values", "ratios", "bench"} <= set(control)
        assert set(control["values"]) == set(stages[0]["values"])
        assert control["bench"]["session"] == stages[0]["bench"]["session"]  # timed in the same session
    teacher, student = stages[0]["values"], stages[-1]["values"]
    onnx = controls["teacher-onnx"]
    assert onnx["bench"]["engine"].startswith("onnxruntime")
    assert abs(onnx["values"]["ndcg@10"] - teacher["ndcg@10"]) < 0.02  # the teacher itself, in another runtime
    assert onnx["values"]["params"] >= teacher["params"]  # the tied table counted twice in ONNX
    scratch = controls["scratch"]
    assert scratch["values"]["params"] == student["params"] and scratch["bench"]["engine"] == stages[-1]["bench"]["engine"]
    assert "distill 1" in scratch["note"] and 0 <= scratch["values"]["ndcg@10"] <= 1

    seeds = stages[1]["seeds"]
    assert out["seeds"]["seeds"] == [0, 1] and seeds["seeds"] == 2 and scratch["seeds"]["seeds"] == 2
    values = [v["ndcg@10"] for v in seeds["values"]]
    assert stages[1]["values"]["ndcg@10"] in values and min(values) <= seeds["mean"]["ndcg@10"] <= max(values)
    paired = out["paired"]
    for row in stages[1:]:
        difference = paired["stages"][row["stage"]]
        assert difference["mean"] == pytest.approx(row["values"]["ndcg@10"] - teacher["ndcg@10"], abs=1e-9)
        assert difference["low"] <= difference["mean"] <= difference["high"] and difference["users"] == 120
    assert paired["controls"]["scratch"]["mean"] == pytest.approx(scratch["values"]["ndcg@10"] - teacher["ndcg@10"])

    # scratch-converged: the scratch recipe, capped at 30 epochs, stopped by early stopping (patience 1)
    converged = controls["scratch-converged"]
    assert converged["values"]["params"] == student["params"] and converged["bench"]["session"] == stages[0]["bench"]["session"]
    trained = out["training"]["scratch-converged"]
    assert converged["training"] == trained and trained["stages"] == ["train"] and trained["train_seconds"] > 0
    assert trained["epochs_run"] == trained["best_epoch"] + 1 < 30  # stopped after 1 epoch without improvement
    own = out["training"]["student"]  # the student's training (distill here), from the run's manifest
    assert own["stages"] == ["distill"] and own["epochs_run"] == 1 and out["training"]["scratch"]["epochs_run"] == 1
    runs = tmp_path / "runs"
    train_info = json.loads((runs / "tinyhead-scratch-converged" / "manifest.json").read_text())["stages"][0]["info"]
    assert train_info["epochs_run"] == trained["epochs_run"] and train_info["train_seconds"] == trained["train_seconds"]
    assert "to convergence" in converged["note"] and "at most 30 epochs" in converged["note"]
    assert paired["controls"]["scratch-converged"]["mean"] == pytest.approx(
        converged["values"]["ndcg@10"] - teacher["ndcg@10"])
    versus = paired["final_vs_scratch_converged"]
    assert versus["mean"] == pytest.approx(student["ndcg@10"] - converged["values"]["ndcg@10"], abs=1e-9)

    report = (results / "tinyhead" / "report.md").read_text()
    assert "| scratch (control) |" in report and "| teacher-onnx (control) |" in report
    assert "| scratch-converged (control) |" in report and "minus the scratch-converged control" in report
    assert f"the control {trained['epochs_run']} epochs (best {trained['best_epoch']}) in " in report
    assert "Against scratch-converged the stack buys " in report
    assert "ΔNDCG@10 vs teacher [95% CI]" in report and "p50 / ONNX teacher" in report
    assert f"{seeds['mean']['ndcg@10']:.4f} ± {seeds['std']['ndcg@10']:.4f}" in report
    assert "against the teacher in ONNX fp32" in report
    # an earlier version of the run (other stage ids) does not get these controls
    record_path = tmp_path / "runs" / "tinyhead" / "controls.json"
    record = json.loads(record_path.read_text())
    record["stage_ids"][-1] = "something else"
    record_path.write_text(json.dumps(record))
    from compress.report.collect import collect_run

    assert collect_run(tmp_path / "runs" / "tinyhead").controls == []

"""benchmarks/large_speed.py, prune_ml1m.py and incremental/run.py on tiny synthetic runs and models."""

from __future__ import annotations

import json
from argparse import Namespace

import numpy as np
import pytest
import yaml

from tests.conftest import TINY_BENCH, TINY_MODEL, TINY_SYNTHETIC, tiny_recipe


def test_large_speed_times_teacher_and_students_with_random_weights(script, argv, tmp_path, capsys):
    recipe = {
        "name": "tiny-large", "seed": 0, "device": "cpu",
        "data": {"source": "synthetic", "synthetic": TINY_SYNTHETIC, "max_len": 20},
        "bench": {**TINY_BENCH, "rounds": 1},
        "stages": [{"stage": "train", "model": TINY_MODEL}, {"stage": "distill", "num_layers": 1},
                   {"stage": "prune", "mlp_ratio": 0.5}, {"stage": "export", "exporter": "legacy"},
                   {"stage": "quantize"}],
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    argv("large_speed.py", "--recipe", tmp_path / "recipe.yaml", "--student", "1,2,1,16", "--out", tmp_path / "out")
    script("large_speed.py").main()
    result = json.loads((tmp_path / "out" / "speed_only.json").read_text())
    names = [row["name"] for row in result["rows"]]
    assert names == ["teacher", "teacher-onnx", "recipe student: int8 ONNX", "alternative 1,2,1,16: int8 ONNX"]
    student = result["rows"][2]
    assert student["shape"] == "1L h16 q2/kv2 mlp16" and student["speedup_cpu"]["batch1"] > 0
    assert "| recipe student: int8 ONNX |" in (tmp_path / "out" / "speed_only.md").read_text()


def test_prune_table_from_a_run_folder(script, argv, tmp_path):
    from compress.pipeline import RunOptions, run_recipe
    from compress.recipe import validate_recipe

    raw = tiny_recipe(tmp_path, epochs=1)
    raw["bench"] = {"enabled": False}
    run_recipe(validate_recipe(raw), RunOptions(show_progress=False))
    argv("prune_ml1m.py", "--run", tmp_path / "artifacts" / "tiny", "--variants", "depth", "--recovery-epochs", 1,
         "--iterations", 2, "--runs", tmp_path / "runs", "--results", tmp_path / "results")
    assert script("prune_ml1m.py").main() == 0
    table = json.loads((tmp_path / "results" / "prune_tiny" / "prune.json").read_text())
    assert [row["phase"] for row in table["rows"]] == ["before pruning", "after pruning", "after recovery"]
    assert table["rows"][2]["params"] < table["rows"][0]["params"]
    assert "| depth | after recovery |" in (tmp_path / "results" / "prune_tiny" / "prune.md").read_text()


def test_incremental_replay_matches_full_recompute_while_histories_fit(script, tiny_data, tiny_step_onnx):
    from compress.data.batching import history_and_target
    from compress.data.padding import left_pad
    from compress.serve.onnx_model import OnnxRecommender
    from compress.serve.step_model import OnnxStepModel

    run = script("incremental/run.py")
    folder = tiny_step_onnx[1]
    step, full = OnnxStepModel(folder, threads=1), OnnxRecommender(folder, threads=1)
    histories = [history_and_target(tiny_data, u, "test")[0] for u in range(12)]
    fitting = [i for i, h in enumerate(histories) if len(h) <= step.max_len]
    assert fitting, "the tiny data has short histories"
    replayed = run.replay(step, histories, refresh_every=0, batch=4)
    ids = left_pad([histories[i] for i in fitting], step.max_len)
    recomputed = full.scores(ids, (ids > 0).astype(np.int64))
    np.testing.assert_allclose(replayed[fitting, 1:], recomputed[:, 1:], rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # exports a model with its step model (dynamo exporter): ~10 s
def test_incremental_speed_on_a_small_pairs_file(script, tmp_path, monkeypatch, capsys):
    from compress.data import DataConfig, load_data
    from compress.data.synthetic import SyntheticConfig

    run = script("incremental/run.py")
    synthetic = SyntheticConfig(**{**TINY_SYNTHETIC, "users": 300})  # batch 256 needs 256 distinct users
    data = load_data(DataConfig(synthetic=synthetic, max_len=20), seed=0)
    lines = [f"{user} {item}" for user in range(data.num_users) for item in data.sequence(user)]
    (tmp_path / "pairs.txt").write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(run, "OUT", tmp_path / "results")  # never the committed results
    run.speed(Namespace(data=tmp_path / "pairs.txt", max_len=[8], requests=256, warmup=1, iterations=2,
                        batch_iterations=1, threads=1))
    record = json.loads((tmp_path / "results" / "speed.json").read_text())
    assert len(record["results"]) == 1 and "| " in capsys.readouterr().out


def test_incremental_command_line(script, argv, capsys):
    run = script("incremental/run.py")
    argv("run.py", "--help")
    with pytest.raises(SystemExit) as done:
        run.main()
    assert done.value.code == 0 and "{speed,policy}" in capsys.readouterr().out

"""The small tools of benchmarks/: screenshot_report.py, torch_table_speed.py, train_step_profile.py,
headline.py's command line, gpu.sh and incremental/checkpoint_model.py."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import torch
import yaml

from tests.benchmarks.conftest import BENCHMARKS, ROOT
from tests.conftest import TINY_MODEL


def test_screenshot_report_exits_3_without_a_browser(script, argv, monkeypatch, tmp_path, capsys):
    shot = script("screenshot_report.py")
    assert shot.find_browser() in (None, *(shutil.which(name) for name in shot.BROWSERS))
    monkeypatch.setattr(shot, "find_browser", lambda: None)
    argv("screenshot_report.py", tmp_path / "report.html")
    assert shot.main() == 3 and "no chromium" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="no chromium"):
        shot.screenshot(tmp_path / "report.html", tmp_path / "shot.png")
    # the rendering itself: tests/report/test_report.py, where chromium is installed


def test_torch_table_speed_prints_a_p50_per_model_folder(script, argv, model_folder, capsys):
    speed = script("torch_table_speed.py")
    assert speed.p50_ms(str(model_folder), iterations=3, threads=1) > 0
    argv("torch_table_speed.py", model_folder, "--iterations", 2, "--threads", 1)
    speed.main()
    assert re.fullmatch(rf"{re.escape(str(model_folder))}: p50 \d+\.\d\d ms\n", capsys.readouterr().out)


def test_train_step_profile_times_and_profiles_tiny_steps(script, argv, capsys):
    profile = script("train_step_profile.py")
    argv("train_step_profile.py", "--items", 40, "--layers", 1, "--batch", 4, "--max-len", 8, "--steps", 1)
    profile.main()
    out = capsys.readouterr().out
    assert re.search(r"^\d+ ms per step, [\d,]+ targets, \d+ threads$", out, re.M) and "Self CPU" in out


def test_headline_command_line(script, argv, capsys):
    headline = script("headline.py")  # the tiny end-to-end run: tests/test_controls.py (slow)
    argv("headline.py", "--help")
    with pytest.raises(SystemExit) as done:
        headline.main()
    assert done.value.code == 0 and "--recipe" in capsys.readouterr().out


def test_gpu_sh_parses_and_names_only_what_exists():
    assert subprocess.run(["bash", "-n", str(BENCHMARKS / "gpu.sh")]).returncode == 0
    text = (BENCHMARKS / "gpu.sh").read_text()
    named = set(re.findall(r"(?:benchmarks|recipes|tests)/[\w/.]+\.(?:py|yaml)", text))
    assert {"benchmarks/headline.py", "tests/test_gpu.py", "recipes/ml1m.yaml"} <= named
    assert [path for path in named if not (ROOT / path).is_file()] == []


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="gpu.sh needs a CUDA device")
def test_gpu_sh_runs_the_cuda_tests():
    done = subprocess.run(["bash", str(BENCHMARKS / "gpu.sh"), "../shared/datasets", "/tmp/gpu-sh", "tests"], cwd=ROOT)
    assert done.returncode == 0


def test_checkpoint_model_writes_a_loadable_model_folder(script, argv, tiny_model, tmp_path, capsys):
    from compress.models import load_model

    stage = tmp_path / "01-train"
    stage.mkdir()
    torch.save({"model": tiny_model.state_dict(), "loop": {"epoch": 2}}, stage / "checkpoint.pt")
    recipe = tmp_path / "small.yaml"
    recipe.write_text(yaml.safe_dump({"data": {"max_len": 20}, "stages": [{"stage": "train", "model": {**TINY_MODEL, "dropout": 0.0}}]}))
    argv("checkpoint_model.py", stage, recipe, "--num-items", tiny_model.config.num_items, "--out", tmp_path / "out")
    script("incremental/checkpoint_model.py").main()
    assert "epoch 2 weights" in capsys.readouterr().out
    loaded = load_model(tmp_path / "out" / "model")
    assert torch.equal(loaded.item_embeddings.weight, tiny_model.item_embeddings.weight)

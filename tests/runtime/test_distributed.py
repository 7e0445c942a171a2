"""Data-parallel runs: `compress run --nproc 2` on CPU (gloo) against the 1-process run."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from compress.runs.files import read_json
from compress.data.batching import train_batches
from compress.runtime.launch import without_option
from compress.pipeline import RunOptions, run_recipe
from compress.recipe import validate_recipe
from tests.conftest import TINY_MODEL

# A little more data than tests/conftest's tiny recipe: 300 test users keep the NDCG@10
# comparison between the two runs meaningful (its standard error is about 0.02).
SYNTHETIC = {"users": 300, "items": 80, "clusters": 4, "min_len": 5, "max_len": 20}
QUIET = RunOptions(show_progress=False, log=lambda _: None)


def small_recipe(out: Path, distill: bool = True) -> dict:
    stages = [{"stage": "train", "model": TINY_MODEL, "epochs": 2, "batch_size": 32, "lr": 0.01}]
    if distill:
        stages.append({"stage": "distill", "num_layers": 1, "epochs": 1, "batch_size": 32})
    return {
        "name": "small", "seed": 0, "device": "cpu", "output_dir": str(out),
        "data": {"source": "synthetic", "synthetic": SYNTHETIC, "max_len": 20},
        "stages": stages, "bench": {"enabled": False}, "report": False,
    }


def run_two_processes(recipe: dict, folder: Path) -> subprocess.CompletedProcess:
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path.cwd()), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "compress", "run", str(path), "--nproc", "2", "-q"],
        capture_output=True, text=True, env=env, timeout=300,
    )


@pytest.mark.slow
def test_two_processes_write_one_run_with_comparable_metrics(tmp_path):
    single = run_recipe(validate_recipe(small_recipe(tmp_path / "one")), QUIET)

    done = run_two_processes(small_recipe(tmp_path / "two"), tmp_path)

    assert done.returncode == 0, done.stderr[-3000:]
    assert "data parallel: 2 processes (gloo)" in done.stdout
    runs = list((tmp_path / "two").iterdir())
    assert [r.name for r in runs] == ["small"]
    assert sorted(p.name for p in runs[0].iterdir()) == ["01-train", "02-distill", "item_ids.json", "manifest.json"]
    manifest = read_json(runs[0] / "manifest.json")
    assert manifest["environment"]["processes"] == 2
    # The only differences from one process: each rank averages the loss over its half of
    # the batch (DDP then averages the ranks), and float sums run in another order. Training
    # takes another path from the first step, so the metrics match within run-to-run noise:
    # 0.05 is about 2.5 standard errors of NDCG@10 over 300 users, and both runs must beat
    # popularity by far.
    popularity = manifest["baseline"]["metrics"]["ndcg@10"]
    for one, two in zip(single["stages"], manifest["stages"]):
        assert two["metrics"]["ndcg@10"] == pytest.approx(one["metrics"]["ndcg@10"], abs=0.05)
        assert two["metrics"]["ndcg@10"] > 3 * popularity
        assert two["params"] == one["params"]


@pytest.mark.slow
def test_a_one_process_checkpoint_resumes_in_two_processes(tmp_path):
    recipe = small_recipe(tmp_path / "artifacts", distill=False)

    class Killed(Exception):
        pass

    def log(message: str) -> None:
        if message.startswith("epoch 2/"):  # the checkpoint holds epoch 1
            raise Killed

    with pytest.raises(Killed):
        run_recipe(validate_recipe(recipe), RunOptions(show_progress=False, log=log))
    stage = tmp_path / "artifacts" / "small" / "01-train"
    assert (stage / "checkpoint.pt").is_file()
    first_epoch = [line for line in (stage / "log.txt").read_text().splitlines() if "epoch 1/2" in line]

    done = run_two_processes(recipe, tmp_path)

    assert done.returncode == 0, done.stderr[-3000:]
    log_text = (stage / "log.txt").read_text()
    assert "resumed from" in log_text and "after epoch 1" in log_text
    history = read_json(stage / "metrics.json")["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    assert f"valid ndcg@10 {history[0]['ndcg@10']:.4f}" in first_epoch[0]  # epoch 1 came from the checkpoint
    assert not (stage / "checkpoint.pt").exists()


def test_batch_parts_of_the_ranks_make_up_the_whole_batch(tiny_data, monkeypatch):
    import compress.runtime.distributed as distributed

    whole = next(train_batches(tiny_data, 20, 7, np.random.default_rng(0)))
    parts = []
    for rank in range(3):
        monkeypatch.setattr(distributed, "rank", lambda rank=rank: rank)
        monkeypatch.setattr(distributed, "world_size", lambda: 3)
        parts.append(next(train_batches(tiny_data, 20, 7, np.random.default_rng(0), part=distributed.batch_part)))
    assert [len(p.item_ids) for p in parts] == [3, 2, 2]
    merged = np.zeros_like(whole.item_ids.numpy())
    for rank, part in enumerate(parts):  # a part is as wide as its own longest window: right-align
        merged[rank::3, merged.shape[1] - part.item_ids.shape[1] :] = part.item_ids.numpy()
    assert (merged == whole.item_ids.numpy()).all()
    assert len(distributed.batch_part(np.array([5]))) == 1  # fewer users than ranks: no rank is left empty


def test_the_relaunched_command_drops_nproc():
    assert without_option(["run", "r.yaml", "--nproc", "2", "-q"], "--nproc") == ["run", "r.yaml", "-q"]
    assert without_option(["--debug", "run", "--nproc=4", "r.yaml"], "--nproc") == ["--debug", "run", "r.yaml"]

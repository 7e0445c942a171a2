"""Kill a run (SIGKILL) during training and during artifact writing, rerun it, and compare with an
uninterrupted run: the listed artifact files (files.json: model weights, config, metrics) must be
bit-identical on CPU.

Two kills go through a real `python -m compress run` subprocess; the others fork this test process
(torch already imported, so each costs a fraction of a second) and die at a named point through
COMPRESS_TEST_KILL_AT (compress/runs/faults.py).
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from compress.runs.files import read_json
from compress.cli import main
from compress.runs.faults import KILL_ENV
from compress.pipeline import RunOptions, run_recipe
from compress.recipe import validate_recipe
from tests.conftest import tiny_recipe

pytestmark = pytest.mark.slow  # every test kills and reruns a two-stage run (two through a subprocess)

ROOT = Path(__file__).resolve().parents[1]


def two_stage_recipe(output_dir: Path) -> dict:
    """Teacher (4 epochs) -> 1-layer distilled student (2 epochs); no bench, no report."""
    recipe = tiny_recipe(output_dir, epochs=4, patience=0)
    recipe.update(output_dir=str(output_dir), report=False, bench={"enabled": False})
    recipe["stages"].append({"stage": "distill", "num_layers": 1, "epochs": 2, "batch_size": 32})
    return recipe


def listed_files(run_dir: Path) -> dict:
    return {stage: read_json(run_dir / stage / "files.json")["files"] for stage in ("01-train", "02-distill")}


def rerun(output_dir: Path) -> list[str]:
    messages: list[str] = []
    run_recipe(validate_recipe(two_stage_recipe(output_dir)), RunOptions(show_progress=False, log=messages.append))
    return messages


def assert_clean(run_dir: Path) -> None:
    leftovers = [p.name for p in run_dir.rglob("*") if p.name.endswith(".tmp") or p.name in ("checkpoint.pt", "pending.json")]
    assert leftovers == [] and not (run_dir / "run.lock").exists()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The uninterrupted run's listed files (one thread, as every test here and the subprocesses)."""
    torch.set_num_threads(1)  # a module fixture runs before conftest's per-test _few_threads
    output_dir = tmp_path_factory.mktemp("reference")
    rerun(output_dir)
    return listed_files(output_dir / "tiny")


def subprocess_env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **extra}


def start_cli(tmp_path: Path, **env: str) -> subprocess.Popen:
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(two_stage_recipe(tmp_path / "artifacts")))
    return subprocess.Popen(
        [sys.executable, "-m", "compress", "run", str(recipe), "--quiet"],
        env=subprocess_env(**env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def test_sigkill_during_training_resumes_bit_identical(tmp_path, reference):
    process = start_cli(tmp_path)
    checkpoint = tmp_path / "artifacts" / "tiny" / "01-train" / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    assert process.returncode == -signal.SIGKILL, process.stdout.read()
    run_dir = tmp_path / "artifacts" / "tiny"
    assert not (run_dir / "01-train" / "stage.json").exists()  # killed mid-training

    messages = rerun(tmp_path / "artifacts")
    assert any("taking it over" in m for m in messages)  # the dead process's run lock
    assert any("resumed from" in m for m in messages)
    assert listed_files(run_dir) == reference
    assert_clean(run_dir)


def test_sigkill_while_writing_the_model_resumes_bit_identical(tmp_path, reference):
    process = start_cli(tmp_path, **{KILL_ENV: "write:model.safetensors"})
    process.wait(120)
    assert process.returncode == -signal.SIGKILL, process.stdout.read()
    model = tmp_path / "artifacts" / "tiny" / "01-train" / "model"
    assert list(model.glob(".model.safetensors.*.tmp")) and not (model / "model.safetensors").exists()

    messages = rerun(tmp_path / "artifacts")
    assert any("resumed from" in m for m in messages)  # the last epoch's checkpoint: no retraining
    assert listed_files(tmp_path / "artifacts" / "tiny") == reference
    assert_clean(tmp_path / "artifacts" / "tiny")


def run_forked_until_killed(output_dir: Path, point: str) -> None:
    """Fork; the child runs the recipe with COMPRESS_TEST_KILL_AT=point and must die of SIGKILL there."""
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        code = 1
        try:
            os.environ[KILL_ENV] = point
            run_recipe(validate_recipe(two_stage_recipe(output_dir)), RunOptions(show_progress=False, log=lambda _: None))
            code = 3  # not killed: the point was never reached
        finally:
            os._exit(code)
    deadline = time.monotonic() + 120
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"child for {point} hung")
        time.sleep(0.01)
    status = done[1]
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"{point}: exit status {status}"


# Each: where the run dies, and a log line the rerun must show (what it reused or resumed).
KILL_POINTS = [
    ("wrote:checkpoint.pt@1", "resumed from"),  # right after the teacher's first epoch checkpoint
    ("write:checkpoint.pt@2", "resumed from"),  # mid-write of the second: the first one is used
    ("write:metrics.json@1", "resumed from"),  # teacher trained and saved, not yet finalised
    ("write:files.json@1", "resumed from"),
    ("write:stage.json@1", "resumed from"),
    ("wrote:stage.json@1", "train: cached"),  # teacher finished, its checkpoint not yet removed
    ("wrote:checkpoint.pt@5", "train: cached"),  # the student's first epoch (4 teacher checkpoints before)
    ("write:model.safetensors@2", "train: cached"),  # the student's weights
    ("write:stage.json@2", "train: cached"),
]


@pytest.mark.parametrize("point, expected", KILL_POINTS, ids=[p for p, _ in KILL_POINTS])
def test_sigkill_at_each_point_resumes_bit_identical(tmp_path, reference, point, expected):
    run_forked_until_killed(tmp_path, point)
    messages = rerun(tmp_path)
    assert any(expected in m for m in messages), messages
    assert listed_files(tmp_path / "tiny") == reference
    assert_clean(tmp_path / "tiny")


def test_sigterm_stops_cleanly_and_the_rerun_resumes(tmp_path, reference):
    """`kill <pid>`: exit 130, the run lock released, temp files gone; the rerun resumes bit-identically."""
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(two_stage_recipe(tmp_path)))
    pid = os.fork()
    if pid == 0:  # child: the console entry point, as `compress run tiny.yaml`
        code = 1
        try:
            sys.argv = ["compress", "run", str(recipe), "--quiet"]
            main()
            code = 0
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else 1
        finally:
            os._exit(code)
    checkpoint = tmp_path / "tiny" / "01-train" / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and time.monotonic() < deadline:
        time.sleep(0.002)
    os.kill(pid, signal.SIGTERM)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 130
    assert not (tmp_path / "tiny" / "run.lock").exists()
    messages = rerun(tmp_path)
    assert not any("taking it over" in m for m in messages)
    assert listed_files(tmp_path / "tiny") == reference

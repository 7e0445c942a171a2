"""A full disk or an out-of-memory fails the stage with a clear message; earlier stages stay intact."""

import errno

import pytest
import torch

from compress.errors import ResourceError
from compress.runs.integrity import verify_folder
from compress.pipeline import RunOptions, run_recipe
from compress.recipe import validate_recipe
from compress.stages import distill as distill_stage
from tests.conftest import tiny_recipe


def two_stages(tmp_path):
    raw = tiny_recipe(tmp_path, epochs=1)
    raw.update(report=False, bench={"enabled": False})
    raw["stages"].append({"stage": "distill", "num_layers": 1, "epochs": 1, "batch_size": 32})
    return validate_recipe(raw)


def run(tmp_path):
    messages = []
    run_recipe(two_stages(tmp_path), RunOptions(show_progress=False, log=messages.append))
    return messages


def test_disk_full_while_writing_names_the_stage_and_keeps_earlier_ones(tmp_path, monkeypatch):
    def full(model, folder, *args):
        raise OSError(errno.ENOSPC, "No space left on device", str(folder / "model.safetensors"))

    monkeypatch.setattr("compress.stages.distill.save_model", full)
    with pytest.raises(ResourceError) as error:
        run(tmp_path)
    assert "stage 02-distill" in error.value.message and "no space left" in error.value.message
    assert "model.safetensors" in error.value.message and "free disk space" in error.value.hint
    run_dir = tmp_path / "artifacts" / "tiny"
    assert verify_folder(run_dir / "01-train") and (run_dir / "01-train" / "stage.json").is_file()
    assert not (run_dir / "02-distill" / "stage.json").exists()

    monkeypatch.undo()
    messages = run(tmp_path)
    assert any("train: cached" in m for m in messages)
    assert verify_folder(run_dir / "02-distill")


@pytest.mark.parametrize("error", [MemoryError(), torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"),
                                   RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 GB")])
def test_out_of_memory_names_the_stage(tmp_path, monkeypatch, error):
    def oom(*args):
        raise error

    monkeypatch.setattr(distill_stage, "run", oom)
    with pytest.raises(ResourceError, match="stage 02-distill ran out of CPU memory") as raised:
        run(tmp_path)
    assert "batch_size" in raised.value.hint
    assert verify_folder(tmp_path / "artifacts" / "tiny" / "01-train")


def test_other_errors_pass_through(tmp_path, monkeypatch):
    def broken(*args):
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(distill_stage, "run", broken)
    with pytest.raises(PermissionError):
        run(tmp_path)

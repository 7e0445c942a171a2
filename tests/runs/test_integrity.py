"""Finished stages list their files (files.json); a changed or truncated file is caught on every load."""

import shutil

import pytest

from compress.runs.files import read_json
from compress.errors import ArtifactError
from compress.runs.integrity import FILES_FILE, list_files, verify_artifact, verify_folder, write_file_list
from compress.models import load_model
from compress.serve.onnx_model import OnnxRecommender
from compress.pipeline import RunOptions, run_recipe
from compress.recipe import validate_recipe
from compress.report.collect import collect_run
from tests.conftest import tiny_recipe


def recipe(tmp_path, name="tiny"):
    raw = tiny_recipe(tmp_path, epochs=1)
    raw.update(name=name, report=False, bench={"enabled": False})
    return validate_recipe(raw)


def run(tmp_path, name="tiny", force=False):
    messages = []
    run_recipe(recipe(tmp_path, name), RunOptions(force=force, show_progress=False, log=messages.append))
    return messages


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_finished_stage_lists_its_files_and_verifies(tmp_path):
    run(tmp_path)
    stage = tmp_path / "artifacts" / "tiny" / "01-train"
    listed = read_json(stage / FILES_FILE)["files"]
    assert set(listed) == {"metrics.json", "model/config.json", "model/model.safetensors"}
    assert listed["model/model.safetensors"]["size"] == (stage / "model" / "model.safetensors").stat().st_size
    assert verify_folder(stage) and verify_artifact(stage / "model")


@pytest.mark.parametrize("damage", ["truncate", "edit", "delete"])
def test_damaged_model_file_is_named_on_rerun_and_load(tmp_path, damage):
    run(tmp_path)
    weights = tmp_path / "artifacts" / "tiny" / "01-train" / "model" / "model.safetensors"
    if damage == "truncate":
        truncate(weights)
    elif damage == "edit":  # same size, one byte flipped
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0xFF
        weights.write_bytes(bytes(data))
    else:
        weights.unlink()
    if damage != "delete":
        with pytest.raises(ArtifactError, match="model.safetensors"):
            load_model(weights.parent)
    with pytest.raises(ArtifactError, match="model.safetensors"):
        collect_run(tmp_path / "artifacts" / "tiny")  # `compress report` reads the run
    with pytest.raises(ArtifactError) as rerun_error:
        run(tmp_path)
    assert "model.safetensors" in str(rerun_error.value) and "--force" in rerun_error.value.hint
    run(tmp_path, force=True)  # the way out
    assert verify_artifact(weights.parent)


def test_edited_metrics_are_caught(tmp_path):
    run(tmp_path)
    metrics = tmp_path / "artifacts" / "tiny" / "01-train" / "metrics.json"
    metrics.write_text(metrics.read_text().replace('"users": 120', '"users": 121'))
    with pytest.raises(ArtifactError, match="metrics.json"):
        run(tmp_path)


def test_damaged_sibling_is_not_reused(tmp_path):
    run(tmp_path, "a")
    truncate(tmp_path / "artifacts" / "a" / "01-train" / "model" / "model.safetensors")
    messages = run(tmp_path, "b")
    assert any("not reusing" in m and "model.safetensors" in m for m in messages)
    assert not any("cached" in m for m in messages)
    assert verify_folder(tmp_path / "artifacts" / "b" / "01-train")


def test_onnx_artifact_is_verified(tiny_onnx, tmp_path):
    _, source = tiny_onnx
    folder = tmp_path / "onnx"
    shutil.copytree(source, folder)
    write_file_list(folder)
    OnnxRecommender(folder, "cpu")
    data = bytearray((folder / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (folder / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="model.onnx was changed"):
        OnnxRecommender(folder, "cpu")


def test_unlisted_and_temp_files_are_left_out(tmp_path):
    (tmp_path / "model").mkdir()
    for name in ("model/config.json", "log.txt", "bench.json", "checkpoint.pt", ".x.json.abc.tmp", "metrics.json"):
        (tmp_path / name).write_text("{}")
    assert set(list_files(tmp_path)) == {"model/config.json", "metrics.json"}


def test_damaged_list_is_an_artifact_error(tmp_path):
    (tmp_path / FILES_FILE).write_text('{"files": [1, 2')
    with pytest.raises(ArtifactError, match="files.json is damaged"):
        verify_folder(tmp_path)

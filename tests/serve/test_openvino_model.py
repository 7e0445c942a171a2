"""OpenVINO as a second engine of the exported artifact: it ranks as onnxruntime does, through the parity
gate and `compress predict --engine openvino`; without the extra, a clear error."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from compress.errors import CompressError
from compress.evaluation.config import ParityConfig
from compress.evaluation.parity import onnx_parity
from compress.evaluation.scoring import torch_scores
from compress.serve.onnx_model import load_recommender

openvino = pytest.importorskip("openvino")


def test_openvino_scores_and_ranks_as_onnxruntime(tiny_onnx, tiny_data):
    model, folder = tiny_onnx
    runtime, vino = load_recommender(folder, "onnxruntime", "cpu"), load_recommender(folder, "openvino")
    assert vino.engine == "openvino-cpu" and vino.num_parameters() == runtime.num_parameters()
    histories = [tiny_data.sequence(u)[-20:] for u in range(tiny_data.num_users)]
    ids = np.zeros((len(histories), 20), dtype=np.int64)
    for row, history in zip(ids, histories):
        row[20 - len(history):] = history
    mask = (ids > 0).astype(np.int64)
    np.testing.assert_allclose(vino.scores(ids, mask)[:, 1:], runtime.scores(ids, mask)[:, 1:], atol=1e-4)
    assert (vino.topk(ids, mask)[1] == runtime.topk(ids, mask)[1]).mean() > 0.99  # only near-ties may swap
    first = vino.scores(ids[:2], mask[:2])
    vino.scores(ids[2:4], mask[2:4])
    assert not np.shares_memory(first, vino.scores(ids[:2], mask[:2]))  # results outlive the next call

    # the export's parity gate, checked under both engines
    report = onnx_parity(torch_scores(model), folder, tiny_data, 20, ParityConfig(engines=["onnxruntime", "openvino"]))
    assert set(report["engines"]) == {"onnxruntime", "openvino"}
    assert all(r["overlap@10"] > 0.99 and abs(r["ndcg_drop@10"]) < 1e-3 for r in report["engines"].values())


def test_predict_with_openvino_gives_onnxruntime_answers(tiny_onnx, tiny_data):
    _, folder = tiny_onnx
    history = " ".join(map(str, tiny_data.item_ids.tolist()[:5]))

    def predict(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "compress", "predict", str(folder), "--history", history, *extra],
                              capture_output=True, text=True)

    runtime, vino = predict(), predict("--engine", "openvino")
    assert vino.returncode == 0, vino.stderr
    assert "OpenVINO openvino-cpu" in vino.stderr
    items = lambda out: [line.split("\t")[1] for line in out.stdout.splitlines()]  # noqa: E731
    ranked, expected = items(vino), items(runtime)
    assert len(ranked) == len(expected) > 0
    assert len(set(ranked) & set(expected)) >= len(expected) - 1  # other kernels: only a near-tie may swap in or out


def test_missing_openvino_is_a_clear_error(tiny_onnx, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(CompressError) as error:
        load_recommender(tiny_onnx[1], "openvino")
    assert "OpenVINO is not installed" in str(error.value) and "compress[openvino]" in error.value.hint


def test_a_run_gates_and_benches_its_export_with_openvino(tmp_path):
    from compress.pipeline import RunOptions, run_recipe
    from compress.recipe import validate_recipe
    from compress.runs.files import read_json
    from tests.conftest import TINY_BENCH, tiny_recipe

    raw = tiny_recipe(tmp_path, epochs=1)
    raw["stages"].append({"stage": "export", "parity": {"engines": ["onnxruntime", "openvino"]}})
    raw["bench"] = {**TINY_BENCH, "engine": "openvino"}
    manifest = run_recipe(validate_recipe(raw), RunOptions(show_progress=False))
    teacher, export = manifest["stages"]
    assert teacher["bench"]["engine"] == "torch-eager" and export["bench"]["engine"] == "openvino-cpu"
    parity = read_json(tmp_path / "artifacts" / "tiny" / export["output"] / "parity.json")
    assert parity["passed"] and set(parity["engines"]) == {"onnxruntime", "openvino"}

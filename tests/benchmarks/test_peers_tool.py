"""benchmarks/peers.py on a tiny synthetic recipe: peers and the onnxruntime/OpenVINO grid, random weights."""

from __future__ import annotations

import importlib.util
import json

import pytest
import yaml

from tests.conftest import TINY_BENCH, TINY_MODEL, TINY_SYNTHETIC


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="needs the openvino extra")
def test_peers_script_times_peers_and_both_engines(script, argv, tmp_path):
    recipe = {
        "name": "tiny-peers", "seed": 0, "device": "cpu",
        "data": {"source": "synthetic", "synthetic": TINY_SYNTHETIC, "max_len": 20},
        "bench": {**TINY_BENCH, "rounds": 1},
        "stages": [{"stage": "train", "model": TINY_MODEL}, {"stage": "distill", "num_layers": 1},
                   {"stage": "export"}, {"stage": "quantize"}],
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    argv("peers.py", "--recipe", tmp_path / "recipe.yaml", "--peer", "openvino-fp32", "--out", tmp_path / "out")
    assert script("peers.py").main() == 0
    result = json.loads((tmp_path / "out" / "peers.json").read_text())
    assert [row["name"] for row in result["peers"]] == ["openvino-fp32"] and "openvino" in result["versions"]
    engines = {row["name"]: row["engine"] for row in result["engines"]}
    assert engines["teacher fp32, onnxruntime"] == "onnxruntime-cpu" and engines["teacher fp32, openvino"] == "openvino-cpu"
    if importlib.util.find_spec("nncf") is not None:  # the peers extra; without it the NNCF row is left out
        assert engines["student int8 (NNCF static QDQ), openvino"] == "openvino-cpu"
    else:
        assert not any("NNCF" in name for name in engines)
    teacher_onnx = {row["engine"]: row["difference"]["mean"] for row in result["engines"] if row["name"].startswith("teacher")}
    assert teacher_onnx == {"onnxruntime-cpu": 0.0, "openvino-cpu": 0.0}  # the teacher's graph ranks as the teacher
    table = (tmp_path / "out" / "peers.md").read_text()
    assert "| teacher fp32, openvino | openvino-cpu |" in table and "- batch-256 seq/s: best peer openvino-fp32" in table
    sessions = {row["bench"]["session"] for row in result["peers"] + result["engines"]}
    assert sessions == {result["session"]}  # peers and engines side by side in one bench session

"""benchmarks/int8.py, item_table.py and window.py on the tiny synthetic data and model."""

from __future__ import annotations

import json
from argparse import Namespace

import numpy as np
import pytest
import yaml

from tests.conftest import TINY_BENCH, TINY_SYNTHETIC


@pytest.mark.slow  # the dynamo export: ~10 s
def test_int8_study_ranks_and_times_every_graph_at_every_level(script, tiny_data, model_folder):
    int8 = script("int8.py")
    args = Namespace(calls=2, big_calls=1, rounds=1, threads=1, parity_users=40,
                     variants=["dynamic, per-tensor"], levels=["disabled", "basic"])
    result = int8.study("tiny", model_folder, tiny_data, args)
    assert [row["variant"] for row in result["rows"]] == ["fp32", "dynamic, per-tensor"]
    fp32 = result["rows"][0]
    assert fp32["parity"]["overlap@10"] == 1.0 and fp32["passes_gate"]
    for row in result["rows"]:
        assert set(row["timings"]) == {"disabled", "basic"}
        timing = row["timings"]["basic"]
        assert timing["p50_ms_batch1"] > 0 and timing["cpu_ms_batch1"] >= 0 and timing["seq_per_s_batch256"] > 0
        assert len(timing["rounds"]["b1"]) == 1 and len(timing["rounds"]["b1"][0]) == 2  # (wall ms, CPU ms)
    lines = int8.markdown(result)
    assert lines[0].startswith("## tiny: 2 layers, hidden 16") and len(lines) == 4 + 2 * 2


def test_int8_median_ms_uses_the_shared_timing_loop(script):
    int8 = script("int8.py")
    calls = []

    class Session:
        def run(self, outputs, feed):
            calls.append(feed)

    wall, cpu = int8.median_ms(Session(), [{"x": i} for i in range(4)], warmup=1)
    assert len(calls) == 4 and wall >= 0 and cpu >= 0


def _recipe(tmp_path):
    from compress.recipe import validate_recipe
    from tests.conftest import tiny_recipe

    return validate_recipe(tiny_recipe(tmp_path))


def test_item_table_exports_measures_and_writes_rows(script, tiny_data, model_folder, tmp_path):
    item_table = script("item_table.py")
    recipe = _recipe(tmp_path)
    work = tmp_path / "work"
    rows = [item_table.compress_and_export("fp32", None, recipe, tiny_data, model_folder, work),
            item_table.compress_and_export("rowwise int8", item_table.METHODS["rowwise int8"], recipe, tiny_data,
                                           model_folder, work)]
    assert rows[1]["table_bytes"] < rows[0]["table_bytes"] == rows[0]["table_bytes_fp32"]
    assert rows[1]["parity"]["overlap@10"] > 0.5 and 0 <= rows[1]["ndcg@10"] <= 1
    item_table.measure_latency(rows, tiny_data, 20, rounds=1, iterations=2, threads=1)
    assert rows[0]["p50_ratio"] == 1.0 and rows[1]["p50_ms_batch1"] > 0
    for row in rows:
        row |= {"dataset": "tiny", "table_bytes_ratio": row["table_bytes"] / rows[0]["table_bytes"],
                "ndcg_ratio": 1.0, "threads": 1}
        row.pop("onnx")
    out = tmp_path / "results"
    (out).mkdir()
    (out / "item_table.json").write_text(json.dumps({"rows": [{**rows[0], "dataset": "other"}]}))
    item_table.write(out, "tiny", rows)  # replaces this dataset's rows, keeps the others
    written = json.loads((out / "item_table.json").read_text())["rows"]
    assert [(r["dataset"], r["method"]) for r in written] == [("other", "fp32"), ("tiny", "fp32"), ("tiny", "rowwise int8")]
    assert "| tiny | rowwise int8 | " in (out / "item_table.md").read_text()


def test_window_times_onnx_artifacts_against_the_teacher(script, argv, tiny_data, tiny_model, model_folder, tmp_path):
    from compress.bench.session import TEACHER_PREFIX
    from compress.export.onnx_export import ExportSettings, export_onnx

    onnx = tmp_path / "onnx"
    export_onnx(tiny_model, onnx, ExportSettings(top_k=10, exporter="legacy"), tiny_data.item_ids.tolist(), {"run": "test"})
    recipe = {"name": "window", "seed": 0, "device": "cpu",
              "data": {"source": "synthetic", "synthetic": TINY_SYNTHETIC, "max_len": 20},
              "bench": {**TINY_BENCH, "rounds": 1}, "stages": [{"stage": "train"}]}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    out = tmp_path / "window.json"
    argv("window.py", "--recipe", tmp_path / "recipe.yaml", "--teacher", model_folder,
         "--onnx", f"tiny-onnx={onnx}", "--out", out)
    script("window.py").main()
    result = json.loads(out.read_text())
    assert set(result["results"]) == {"tiny-onnx", TEACHER_PREFIX + "teacher"}
    row = result["results"]["tiny-onnx"]
    assert row["latency_p50_ms"] > 0 and np.isfinite(row["ratios"]["latency_p50_ms"])

import numpy as np
import onnx
import pytest

from compress.runs.files import read_json
from compress.errors import ArtifactError, ParityError
from compress.export.onnx_export import ExportSettings, export_path
from compress.runs.integrity import verify_artifact
from compress.evaluation.parity import ParityConfig, check_parity, ranking_parity
from compress.evaluation.scoring import torch_scores
from compress.pipeline import RunOptions, run_recipe
from compress.recipe import validate_recipe
from tests.conftest import tiny_recipe

QUIET = RunOptions(show_progress=False, log=lambda _: None)


def export_recipe(tmp_path, **export):
    raw = tiny_recipe(tmp_path, epochs=1)
    raw["stages"].append({"stage": "export", **export})
    return {**raw, "bench": {"enabled": False}}


def test_export_stage_is_in_parity_and_evaluated_with_onnxruntime(tmp_path):
    manifest = run_recipe(validate_recipe(export_recipe(tmp_path, top_k=5)), QUIET)
    run_dir = tmp_path / "artifacts" / "tiny"
    train, export = manifest["stages"]
    assert export["kind"] == "onnx" and export["output"] == "02-export/onnx"
    folder = run_dir / export["output"]
    onnx.checker.check_model(str(folder / "model.onnx"))
    parity = read_json(folder / "parity.json")
    assert parity["passed"] and parity["overlap@10"] >= 0.99
    assert export["metrics"]["ndcg@10"] == pytest.approx(train["metrics"]["ndcg@10"], abs=1e-6)
    metadata = read_json(folder / "metadata.json")
    assert metadata["item_ids"] == read_json(run_dir / "item_ids.json") and metadata["top_k"] == 5
    assert metadata["source"]["run"] == "tiny" and metadata["source"]["stage"] == "02-export"
    assert metadata["opset"] == 23 and metadata["exporter"] == "dynamo" and "onnxruntime" in metadata["versions"]
    ops = {node.op_type for node in onnx.load(str(folder / "model.onnx")).graph.node}
    assert "Attention" in ops and "Softmax" not in ops  # attention is one fused op, not spelled out


def test_export_cli_path_from_a_run_and_from_a_bare_model(tmp_path, tiny_model):
    run_recipe(validate_recipe({**tiny_recipe(tmp_path, epochs=1), "bench": {"enabled": False}}), QUIET)
    result = export_path(tmp_path / "artifacts" / "tiny", tmp_path / "out", ExportSettings(), ParityConfig(), log=str)
    assert result["parity"]["overlap@10"] >= 0.99
    assert read_json(tmp_path / "out" / "metrics.json")["test"]["ndcg@10"] == pytest.approx(result["metrics"]["ndcg@10"])
    assert set(read_json(tmp_path / "out" / "files.json")["files"]) == {"model.onnx", "metadata.json", "metrics.json", "parity.json"}
    export_path(tmp_path / "artifacts" / "tiny", tmp_path / "out", ExportSettings(top_k=5), ParityConfig(), log=str)
    assert verify_artifact(tmp_path / "out")  # exporting again over it replaces the old list
    from compress.models import save_model

    save_model(tiny_model, tmp_path / "bare")
    messages = []
    export_path(tmp_path / "bare", tmp_path / "out2", ExportSettings(), ParityConfig(), log=messages.append)
    assert "parity gate is skipped" in messages[0]
    assert read_json(tmp_path / "out2" / "metadata.json")["item_ids"][:3] == [1, 2, 3]
    with pytest.raises(ArtifactError, match="neither a run folder"):
        export_path(tmp_path, tmp_path / "out3", ExportSettings(), ParityConfig())


def test_parity_gate_failure_is_a_clear_error(tmp_path, tiny_model, tiny_data):
    reference = torch_scores(tiny_model)
    reversed_ranking = lambda batch: -reference(batch)  # noqa: E731 - the worst possible conversion
    config = ParityConfig(users=50)
    report = ranking_parity(reference, reversed_ranking, tiny_data, 20, config)
    assert report["overlap@10"] == 0.0 and report["users"] == 50
    with pytest.raises(ParityError, match="failed the ranking parity gate") as info:
        check_parity(report, config, tmp_path, "the ONNX export")
    assert "top-10 overlap 0.000 (min 0.99)" in str(info.value) and info.value.hint
    assert read_json(tmp_path / "parity.json")["passed"] is False


def test_export_options_are_validated(tmp_path):
    with pytest.raises(Exception, match="top_k"):
        validate_recipe(export_recipe(tmp_path, top_k=0))
    raw = tiny_recipe(tmp_path)
    raw["stages"] = [{"stage": "export"}]
    with pytest.raises(Exception, match="needs a torch model, but gets nothing"):
        validate_recipe(raw)


@pytest.mark.slow
def test_incremental_export_stage_bench_and_report(tmp_path):
    from compress.report import build_report
    from compress.serve.locate import resolve_artifact
    from compress.serve.stateful import StatefulRecommender
    from tests.conftest import TINY_BENCH

    raw = export_recipe(tmp_path, top_k=5, incremental=True, parity={"users": 16})
    raw["bench"] = {**TINY_BENCH, "threads": 1}
    manifest = run_recipe(validate_recipe(raw), QUIET)
    run_dir = tmp_path / "artifacts" / "tiny"
    folder = run_dir / manifest["stages"][1]["output"]
    assert (folder / "step.onnx").is_file() and read_json(folder / "metadata.json")["step"]["max_positions"] == 20
    parity = read_json(folder / "parity.json")
    assert parity["passed"] and parity["step"]["max_abs_diff"] < 1e-4 and parity["step"]["identical_topk"] == 1.0
    verify_artifact(folder)  # step.onnx is in the checksummed file list
    bench = read_json(folder.parent / "bench.json")
    assert bench["incremental"]["batch_8"]["step"]["events_per_s"] > 0
    assert "Incremental serving" in build_report([run_dir], tmp_path / "report").markdown.read_text()
    from compress.cli import _print_incremental, console

    with console.capture() as captured:
        _print_incremental(run_dir, manifest)
    assert "export: one new event per request" in captured.get()
    assert resolve_artifact(run_dir, need_step=True) == folder
    [result] = StatefulRecommender(run_dir / "02-export" / "onnx").observe([("u", read_json(run_dir / "item_ids.json")[0])])
    assert len(result.items) == 5


def test_a_serving_window_scores_the_last_events_and_quantize_follows_it(tmp_path):
    raw = export_recipe(tmp_path, max_len=4)
    raw["stages"].append({"stage": "quantize", "backend": "onnxruntime", "mode": "dynamic"})
    manifest = run_recipe(validate_recipe(raw), QUIET)
    train, export, quantize = manifest["stages"]
    run_dir = tmp_path / "artifacts" / "tiny"
    for stage in (export, quantize):
        assert read_json(run_dir / stage["output"] / "metadata.json")["max_len"] == 4
    assert read_json(run_dir / export["output"] / "parity.json")["overlap@10"] >= 0.99  # against PyTorch on 4 events
    # 4 of up to 20 events: the model ranks with less history, and the stage's metrics say what it cost
    assert export["metrics"]["ndcg@10"] != pytest.approx(train["metrics"]["ndcg@10"], abs=1e-6)

    from compress.serve.onnx_model import OnnxRecommender

    served = OnnxRecommender(run_dir / export["output"], "cpu")
    ids = np.array([[3, 8, 5, 1, 2, 7]])
    last_four = served.scores(ids[:, -4:], np.ones((1, 4), dtype=np.int64))
    left_padded = served.scores(np.array([[0, 0, 5, 1, 2, 7]]), np.array([[0, 0, 1, 1, 1, 1]]))
    np.testing.assert_allclose(last_four, left_padded, rtol=1e-5, atol=1e-5)


def test_a_window_longer_than_the_histories_is_rejected(tmp_path, tiny_model):
    with pytest.raises(Exception, match="max_len 50 is longer than data.max_len 20"):
        validate_recipe(export_recipe(tmp_path, max_len=50))
    from compress.errors import RecipeError
    from compress.export.onnx_export import serving_window

    with pytest.raises(RecipeError, match="longer than the 20 events"):
        serving_window(tiny_model, 21)
    assert serving_window(tiny_model, 8).config.max_len == 8 and tiny_model.config.max_len == 20  # a view, not a change

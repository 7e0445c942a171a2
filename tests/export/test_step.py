"""The ONNX step model: metadata, parity with the PyTorch full pass, and the export's parity gate."""

import numpy as np
import onnx
import pytest
import torch

from compress.errors import ParityError
from compress.evaluation.parity import ParityConfig
from compress.export.onnx_export import ExportSettings, export_and_check
from compress.export.step import check_step_parity, step_parity
from compress.runs.files import read_json
from compress.data.padding import left_pad
from compress.serve.step_model import OnnxStepModel


def full_scores(model, histories):
    ids = torch.from_numpy(left_pad(histories, model.config.max_len))
    with torch.no_grad():
        return model.score(model.last_states(ids, (ids > 0).long())).numpy()


def test_step_file_and_metadata(tiny_step_onnx):
    model, folder = tiny_step_onnx
    step = read_json(folder / "metadata.json")["step"]
    graph = onnx.load(str(folder / "step.onnx"))
    assert [i.name for i in graph.graph.input] == list(step["inputs"])
    assert [o.name for o in graph.graph.output] == list(step["outputs"])
    assert "past.1.value" in step["inputs"] and "new.1.value" in step["outputs"]
    assert step["outputs"]["new.0.key"]["shape"] == ["batch", 1, "new", model.config.head_dim]
    assert step["max_positions"] == model.config.max_len == 8
    assert step["inputs"]["past.0.key"]["shape"] == ["batch", 1, "past", model.config.head_dim]


def test_onnx_step_equals_the_full_pass_for_a_batch_of_different_lengths(tiny_step_onnx):
    model, folder = tiny_step_onnx
    step = OnnxStepModel(folder)
    store = step.new_store(2)  # grown below
    store.grow(6)
    slots = [5, 0, 3, 1]
    histories = [np.array(h) for h in ([5], [3, 9, 12], [1, 2, 3, 4, 5, 6, 7], [8, 8, 2, 30, 31, 4, 9, 10])]
    # prefill everything but the last item in one call (several new items per user), then one step each
    prefill = step.advance(store, slots[1:], [h[:-1] for h in histories[1:]], scores=True)
    assert store.length[slots].tolist() == [0, 2, 6, 7]
    assert np.abs(prefill.scores[:, 1:] - full_scores(model, [h[:-1] for h in histories[1:]])[:, 1:]).max() < 1e-4
    restore = store.kv.copy(), store.length.copy(), store.write.copy(), store.position.copy(), store.items.copy()
    served = step.advance(store, slots, [h[-1:] for h in histories])  # serving: top-K only, no score matrix
    assert served.scores is None
    store.kv[:], store.length[:], store.write[:], store.position[:], store.items[:] = restore
    out = step.advance(store, slots, [h[-1:] for h in histories], scores=True)
    assert out.top_ids.tolist() == served.top_ids.tolist() and np.array_equal(out.top_scores, served.top_scores)
    expected = full_scores(model, histories)
    assert np.abs(out.scores[:, 1:] - expected[:, 1:]).max() < 1e-4
    for row, history in enumerate(histories):
        masked = expected[row].copy()
        masked[history] = -np.inf
        masked[0] = -np.inf
        assert out.top_ids[row].tolist() == np.argsort(-masked, kind="stable")[:10].tolist()
        slot = slots[row]
        assert store.length[slot] == store.position[slot] == len(history)
        assert store.window(slot).tolist() == history.tolist()
    assert store.length[[2, 4]].tolist() == [0, 0]  # untouched slots stay empty


def test_parity_report_and_gate(tiny_step_onnx, tiny_data):
    model, folder = tiny_step_onnx
    report = step_parity(model, folder, tiny_data, users=12, k=10)
    assert report["users"] == 12 and report["events"] >= 12 * 4
    assert report["max_abs_diff"] < 1e-4 and report["identical_topk"] == 1.0 and report["k"] == 10 and check_step_parity(report)
    with pytest.raises(ParityError, match="differs from the PyTorch full pass"):
        check_step_parity({**report, "max_abs_diff": 1e-2})


@pytest.mark.slow
def test_export_and_check_records_the_step_in_parity_json(tiny_data, tmp_path):
    torch.manual_seed(0)
    from compress.models import RecommenderConfig, SequentialRecommender

    model = SequentialRecommender(RecommenderConfig(hidden_size=16, num_layers=1, num_heads=2, num_items=tiny_data.num_items,
                                                    max_len=6, dropout=0.0)).eval()
    report = export_and_check(model, tmp_path, ExportSettings(incremental=True, exporter="legacy"), ParityConfig(users=8), tiny_data,
                              tiny_data.item_ids.tolist(), {"run": "t"}, log=lambda _: None)
    parity = read_json(tmp_path / "parity.json")
    assert parity["passed"] and parity["step"] == report["step"] and parity["step"]["identical_topk"] == 1.0
    assert (tmp_path / "step.onnx").is_file() and not (tmp_path / "step.raw.onnx").exists()

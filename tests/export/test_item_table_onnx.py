"""Compressed item tables in ONNX: packed storage, parity with PyTorch, chunked top-K, torch-free predict."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

from compress.data.batching import left_pad
from compress.export.item_table import PackedTable
from compress.export.config import ExportSettings
from compress.export.onnx_export import export_onnx
from compress.export.quantize import quantize_onnx
from compress.serve.onnx_model import OnnxRecommender
from tests.methods.test_item_table import compressed, tables

METHODS = ["plain", "int4", "mixed", "mixed43", "lowrank"]


@pytest.fixture(scope="module")
def exported(tiny_data, tmp_path_factory):
    """method -> (model, full-ranking export, chunked export)."""
    from compress.models import RecommenderConfig, SequentialRecommender
    from tests.conftest import TINY_MODEL

    torch.manual_seed(0)
    base = SequentialRecommender(RecommenderConfig(**TINY_MODEL, num_items=tiny_data.num_items, max_len=20, dropout=0.0))
    models = {"plain": base.eval()} | {name: compressed(base, t) for name, t in tables(base, tiny_data).items()}
    out = {}
    for name, model in models.items():
        root = tmp_path_factory.mktemp(name)
        ids = tiny_data.item_ids.tolist()
        export_onnx(model, root / "full", ExportSettings(top_k=10, exporter="legacy"), ids, {"run": "test"})
        export_onnx(model, root / "chunked", ExportSettings(top_k=10, item_chunk=7, exporter="legacy"), ids, {"run": "test"})
        out[name] = (model, root / "full", root / "chunked")
    return out


def feeds(data, users=range(24)):
    ids = left_pad([data.sequence(u)[:-1] for u in users], 20)
    return ids, (ids > 0).astype(np.int64)


@pytest.mark.parametrize("method", METHODS)
def test_onnx_scores_match_pytorch(exported, tiny_data, method):
    model, full, chunked = exported[method]
    ids, mask = feeds(tiny_data)
    with torch.no_grad():
        expected = model.score(model.last_states(torch.from_numpy(ids), torch.from_numpy(mask))).numpy()
    for folder in (full, chunked):
        scores = OnnxRecommender(folder, "cpu").scores(ids, mask)
        assert np.allclose(scores[:, 1:], expected[:, 1:], atol=1e-4) and np.isneginf(scores[:, 0]).all()


@pytest.mark.parametrize("method", ["int4", "mixed", "mixed43"])
def test_quantized_table_is_stored_packed(exported, method):
    model, full, _ = exported[method]
    graph = onnx.load(str(full / "model.onnx"))
    rows, dim = model.config.num_items + 1, model.config.item_dim
    floats = [t for t in graph.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and set(t.dims) == {rows, dim}]
    assert floats == []  # no float copy of the table (nor its transpose) in the file
    packed = PackedTable.from_graph(graph)
    assert np.allclose(packed.dequantize(), model.item_table.detach().numpy(), atol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_chunked_top_k_equals_full_top_k(exported, tiny_data, method):
    _, full, chunked = exported[method]
    ids, mask = feeds(tiny_data, range(40))  # histories of up to 20 items: K + L = 30 > the chunk of 7
    full_scores, full_ids = OnnxRecommender(full, "cpu").topk(ids, mask)
    chunk_scores, chunk_ids = OnnxRecommender(chunked, "cpu").topk(ids, mask)
    assert np.array_equal(chunk_ids, full_ids)
    assert np.allclose(chunk_scores, full_scores, atol=1e-5)
    assert not any(set(row) & set(history) for row, history in zip(chunk_ids, ids))  # inputs never recommended


@pytest.mark.slow
def test_dynamo_export_of_a_compressed_table_ranks_in_chunks_like_legacy(exported, tiny_data, tmp_path):
    model, full, _ = exported["mixed"]
    export_onnx(model, tmp_path / "dynamo", ExportSettings(top_k=10, item_chunk=7, exporter="dynamo"),
                tiny_data.item_ids.tolist(), {"run": "test"})
    ids, mask = feeds(tiny_data, range(40))
    assert np.array_equal(OnnxRecommender(tmp_path / "dynamo", "cpu").topk(ids, mask)[1],
                          OnnxRecommender(full, "cpu").topk(ids, mask)[1])
    assert PackedTable.from_graph(onnx.load(str(tmp_path / "dynamo" / "model.onnx"))) is not None


def test_chunked_graph_builds_no_score_matrix_unless_asked(exported, tiny_data):
    _, _, chunked = exported["plain"]
    recommender = OnnxRecommender(chunked, "cpu")
    ids, mask = feeds(tiny_data, range(3))
    scores = recommender.session.run(["scores"], {"item_ids": ids, "attention_mask": mask, "full_scores": np.array(False)})
    assert scores[0].shape == (3, 0)


def test_onnxruntime_int8_keeps_the_table_packed(exported, tiny_data, tmp_path):
    model, full, _ = exported["mixed"]
    quantize_onnx(full, tmp_path / "q", "dynamic")
    graph = onnx.load(str(tmp_path / "q" / "model.onnx"))
    assert PackedTable.from_graph(graph) is not None
    assert any(t.name == "item_table.codes_1" for t in graph.graph.initializer)
    ids, mask = feeds(tiny_data)
    reference = OnnxRecommender(full, "cpu").topk(ids, mask)[1]
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(OnnxRecommender(tmp_path / "q", "cpu").topk(ids, mask)[1], reference)])
    assert overlap >= 0.8


@pytest.mark.parametrize("which", [1, 2])  # the full-ranking and the chunked export of a mixed table
def test_predict_serves_a_compressed_table_without_torch(exported, tiny_data, which):
    model, *folders = exported["mixed"]
    original = tiny_data.item_ids.tolist()
    code = "import sys; sys.modules['torch'] = None; from compress.cli import main; sys.argv[0] = 'compress'; main()"
    result = subprocess.run([sys.executable, "-c", code, "predict", str(folders[which - 1]), "--history",
                             f"{original[2]} {original[16]}", "--top-k", "5"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    served = [line.split("\t")[1] for line in result.stdout.strip().splitlines()]
    ids = torch.tensor([[3, 17]])
    with torch.no_grad():
        scores = model.score(model.last_states(ids, torch.ones_like(ids)))
    scores[0, [0, 3, 17]] = float("-inf")
    assert served == [str(original[i - 1]) for i in scores[0].topk(5).indices.tolist()]

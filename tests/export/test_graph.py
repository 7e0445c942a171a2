import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compress.export.graph import _is_transpose, share_transposed_initializers


def _initializer_matrices(path):
    graph = onnx.load(str(path)).graph
    return [numpy_helper.to_array(t) for t in graph.initializer if len(t.dims) == 2]


def test_the_export_stores_the_tied_item_table_once(tiny_onnx):
    model, folder = tiny_onnx
    matrices = _initializer_matrices(folder / "model.onnx")
    table = model.item_table.detach().numpy()
    assert sum(np.array_equal(m, table) for m in matrices) == 1
    assert not any(_is_transpose(a, b) for i, a in enumerate(matrices) for b in matrices[i + 1:])


def test_sharing_a_transposed_copy_keeps_outputs_and_shrinks_the_file(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(0)
    table = rng.standard_normal((50, 8)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["rows"]),
         helper.make_node("MatMul", ["rows", "table_t"], ["scores"])],
        "tied",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [None])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, 50])],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(np.ascontiguousarray(table.T), "table_t")],
    )
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    ids = np.array([3, 7, 0], dtype=np.int64)
    before, size_before = ort.InferenceSession(str(path)).run(None, {"ids": ids})[0], path.stat().st_size

    assert share_transposed_initializers(path) == table.nbytes
    assert [m.shape for m in _initializer_matrices(path)] == [(50, 8)]  # the lookup's rows are kept
    onnx.checker.check_model(str(path))
    after = ort.InferenceSession(str(path)).run(None, {"ids": ids})[0]
    np.testing.assert_array_equal(after, before)
    assert path.stat().st_size < size_before - table.nbytes * 0.9
    assert share_transposed_initializers(path) == 0  # nothing left to share

"""compress.export.quantize: static int8 with signed or unsigned activations."""

import numpy as np
import onnx
import pytest

from compress.export.quantize import quantize_onnx
from compress.runs.files import read_json
from compress.serve.onnx_model import OnnxRecommender


@pytest.mark.parametrize("activation_type, dtype", [("int8", onnx.TensorProto.INT8), ("uint8", onnx.TensorProto.UINT8)])
def test_static_activation_type_sets_the_activation_zero_points(tiny_onnx, tmp_path, activation_type, dtype):
    model, source = tiny_onnx
    rng = np.random.default_rng(0)
    ids = rng.integers(1, model.config.num_items + 1, (8, model.config.max_len))
    feeds = [{"item_ids": ids, "attention_mask": np.ones_like(ids)}]
    quantize_onnx(source, tmp_path, "static", calibration=feeds, activation_type=activation_type)
    graph = onnx.load(str(tmp_path / "model.onnx")).graph
    initializers = {t.name: t for t in graph.initializer}
    # the zero point of every QuantizeLinear (activations at run time) has the asked type
    zero_points = {initializers[n.input[2]].data_type for n in graph.node
                   if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in initializers}
    assert zero_points == {dtype}
    assert read_json(tmp_path / "metadata.json")["quantization"]["activation_type"] == activation_type
    top_ids = OnnxRecommender(tmp_path, "cpu").topk(ids, np.ones_like(ids))[1]
    assert top_ids.shape == (8, 10)


@pytest.mark.parametrize("item_table", [False, True])
def test_dynamic_int8_quantizes_the_item_table_only_when_asked(tiny_onnx, tmp_path, item_table):
    model, source = tiny_onnx
    quantize_onnx(source, tmp_path, "dynamic", item_table=item_table)
    rows = model.config.num_items + 1
    tables = [t for t in onnx.load(str(tmp_path / "model.onnx")).graph.initializer if rows in tuple(t.dims)]
    kinds = sorted(onnx.TensorProto.DataType.Name(t.data_type) for t in tables if len(t.dims) == 2)
    # the scoring Gemm (matmul + padding bias) is rewritten to a MatMul by the quantizer: it stays float
    # too, and the table is stored once (no float transposed copy beside the lookup's)
    if item_table:  # both the lookup and the scoring read int8 tables
        assert kinds and "FLOAT" not in kinds
    else:
        assert kinds == ["FLOAT"]

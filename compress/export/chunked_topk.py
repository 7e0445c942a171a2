"""Top-K over a large catalogue inside the ONNX graph, without a [batch, items] score matrix (torch-free).

The exported encoder gives `query` [B, w]; the catalogue is the lookup table `rows` [N + 1, w]
(the item table, or the left factor of a low-rank table). An ONNX Loop scores `item_chunk`
items at a time and keeps a running top-(K + L) of (score, id), L the input length, so
memory is [B, item_chunk + K + L] whatever N is; padding (row 0) is never scored. The input
items are then removed and the best K kept: the same top-K as scoring every item (the input
items can take at most L places of the running list).

    query ─► Loop over chunks: Gemm(query, rows[a:b]ᵀ) ─► Concat running ─► TopK(K + L)
          ─► drop input items ─► TopK(K) ─► top_scores, top_ids

`scores` [B, N + 1] (for evaluation) is computed inside an If only when the input
`full_scores` (a bool scalar) is true; otherwise it is an empty [B, 0].
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from compress.serve.onnx_model import FULL_SCORES


class _Builder:
    """Appends uniquely named nodes to a node list."""

    def __init__(self, prefix: str) -> None:
        self.prefix, self.nodes = prefix, []

    def __call__(self, op: str, inputs: list[str], outputs: int = 1, **attrs) -> str | list[str]:
        names = [f"{self.prefix}{len(self.nodes)}_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op, inputs, names, name=f"{self.prefix}{len(self.nodes)}", **attrs))
        return names[0] if outputs == 1 else names

    def const(self, value) -> str:
        return self("Constant", [], value=numpy_helper.from_array(np.asarray(value)))


def add_chunked_ranking(model: onnx.ModelProto, query: str, rows: str, num_items: int, top_k: int, chunk: int) -> None:
    """Replace `model`'s outputs (its `query`) by top_scores, top_ids and the optional full scores."""
    graph = model.graph
    b = _Builder("topk_")
    one, zero = b.const(np.array([1], dtype=np.int64)), b.const(np.array([0], dtype=np.int64))
    batch = b("Slice", [b("Shape", [query]), zero, one])
    length = b("Slice", [b("Shape", ["item_ids"]), one, b.const(np.array([2], dtype=np.int64))])
    keep = b("Add", [b.const(np.array([top_k], dtype=np.int64)), length])  # K + L candidates survive a chunk
    empty = b("Concat", [batch, zero], axis=0)
    start_scores = b("ConstantOfShape", [empty], value=numpy_helper.from_array(np.array([0], dtype=np.float32)))
    start_ids = b("ConstantOfShape", [empty], value=numpy_helper.from_array(np.array([0], dtype=np.int64)))
    trips = b.const(np.array(-(-num_items // chunk), dtype=np.int64))
    always = b.const(np.array(True))
    best_scores, best_ids = b("Loop", [trips, always, start_scores, start_ids], outputs=2,
                              body=_chunk_body(query, rows, num_items, chunk, keep))
    # remove the input items, keep the best K
    seen = b("Greater", [b("ReduceSum", [b("Cast", [b("Equal", [b("Unsqueeze", [best_ids, b.const(np.array([2]))]),
                                                                b("Unsqueeze", ["item_ids", one])])], to=TensorProto.INT32),
                                         b.const(np.array([2]))], keepdims=0), b.const(np.array(0, dtype=np.int32))])
    masked = b("Where", [seen, b.const(np.array(-np.inf, dtype=np.float32)), best_scores])
    top_scores, order = b("TopK", [masked, b.const(np.array([top_k], dtype=np.int64))], outputs=2, axis=1)
    top_ids = b("GatherElements", [best_ids, order], axis=1)
    scores = b("If", [FULL_SCORES], then_branch=_full_scores(query, rows, num_items), else_branch=_no_scores(batch))
    b("Identity", [top_scores]), b("Identity", [top_ids]), b("Identity", [scores])
    for node, name in zip(b.nodes[-3:], ("top_scores", "top_ids", "scores")):
        node.output[0] = name
    graph.node.extend(b.nodes)
    del graph.output[:]
    graph.output.extend([
        helper.make_tensor_value_info("top_scores", TensorProto.FLOAT, ["batch", top_k]),
        helper.make_tensor_value_info("top_ids", TensorProto.INT64, ["batch", top_k]),
        helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", "scored_items"]),
    ])
    graph.input.append(helper.make_tensor_value_info(FULL_SCORES, TensorProto.BOOL, []))


def _chunk_body(query: str, rows: str, num_items: int, chunk: int, keep: str) -> onnx.GraphProto:
    """One Loop iteration: score items [1 + i*chunk, min(1 + (i+1)*chunk, N + 1)) and merge the top."""
    b = _Builder("chunk_")
    axis0 = b.const(np.array([0], dtype=np.int64))
    start = b("Add", [b("Mul", ["i", b.const(np.array(chunk, dtype=np.int64))]), b.const(np.array(1, dtype=np.int64))])
    stop = b("Min", [b("Add", [start, b.const(np.array(chunk, dtype=np.int64))]),
                     b.const(np.array(num_items + 1, dtype=np.int64))])
    block = b("Slice", [rows, b("Unsqueeze", [start, axis0]), b("Unsqueeze", [stop, axis0]), axis0])
    scores = b("Gemm", [query, block], transB=1)
    ids = b("Expand", [b("Unsqueeze", [b("Range", [start, stop, b.const(np.array(1, dtype=np.int64))]), axis0]),
                       b("Shape", [scores])])
    all_scores = b("Concat", ["scores_in", scores], axis=1)
    all_ids = b("Concat", ["ids_in", ids], axis=1)
    width = b("Slice", [b("Shape", [all_scores]), b.const(np.array([1], dtype=np.int64)), b.const(np.array([2], dtype=np.int64))])
    top, order = b("TopK", [all_scores, b("Min", [keep, width])], outputs=2, axis=1)
    top_ids = b("GatherElements", [all_ids, order], axis=1)
    b("Identity", ["cond_in"])
    outputs = [b.nodes[-1].output[0], top, top_ids]
    return helper.make_graph(
        b.nodes, "chunk",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("scores_in", TensorProto.FLOAT, ["batch", None]),
         helper.make_tensor_value_info("ids_in", TensorProto.INT64, ["batch", None])],
        [helper.make_tensor_value_info(outputs[0], TensorProto.BOOL, []),
         helper.make_tensor_value_info(outputs[1], TensorProto.FLOAT, ["batch", None]),
         helper.make_tensor_value_info(outputs[2], TensorProto.INT64, ["batch", None])],
    )


def _full_scores(query: str, rows: str, num_items: int) -> onnx.GraphProto:
    """[B, N + 1] scores of every item, the padding column -inf (as SequentialRecommender.score)."""
    b = _Builder("full_")
    scores = b("Gemm", [query, rows], transB=1)
    padding = b("Equal", [b("Range", [b.const(np.array(0, dtype=np.int64)), b.const(np.array(num_items + 1, dtype=np.int64)),
                                      b.const(np.array(1, dtype=np.int64))]), b.const(np.array(0, dtype=np.int64))])
    out = b("Where", [padding, b.const(np.array(-np.inf, dtype=np.float32)), scores])
    return helper.make_graph(b.nodes, "full", [], [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["batch", None])])


def _no_scores(batch: str) -> onnx.GraphProto:
    b = _Builder("none_")
    out = b("ConstantOfShape", [b("Concat", [batch, b.const(np.array([0], dtype=np.int64))], axis=0)],
            value=numpy_helper.from_array(np.array([0], dtype=np.float32)))
    return helper.make_graph(b.nodes, "none", [], [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["batch", None])])

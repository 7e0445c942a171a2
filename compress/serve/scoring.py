"""Stateless scoring for `compress serve` (POST /recommend): histories of original ids in, top-K out.

`HistoryScorer` encodes histories (unknown ids dropped and reported, the last max_len items kept and
the truncation reported), pads every row to max_len (a row's input never depends on its batch
partners) and runs them through model.onnx in one onnxruntime call per batch.

Batch independence: a graph holding an op whose result depends on the whole batch (dynamic int8:
`DynamicQuantizeLinear` computes one activation scale over every row of the call) would give a user
different scores depending on who else is in the batch. Such a graph is run one row at a time
(`row_at_a_time`): still gathered by the micro-batcher, never mixed inside one onnxruntime call, so
its results are the ones of a batch of one. fp32 graphs and static (calibrated) int8 run whole batches.
Torch-free: numpy, onnx (graph inspection) and onnxruntime.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from compress.data.padding import left_pad
from compress.serve.onnx_model import MODEL_FILE, OnnxRecommender
from compress.serve.requests import RequestError

# ops computing a statistic over the whole input tensor, i.e. over every row of the batch
BATCH_WIDE_OPS = frozenset({"DynamicQuantizeLinear", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM"})


def batch_wide_ops(path: Path) -> list[str]:
    """The batch-wide op types (BATCH_WIDE_OPS) in an ONNX file, subgraphs included."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    found: set[str] = set()
    graphs = [model.graph]
    while graphs:
        graph = graphs.pop()
        for node in graph.node:
            if node.op_type in BATCH_WIDE_OPS:
                found.add(node.op_type)
            for attr in node.attribute:
                graphs.extend([attr.g] if attr.HasField("g") else [])
                graphs.extend(attr.graphs)
    return sorted(found)


@dataclass
class Encoded:
    ids: np.ndarray  # internal ids, the last max_len known items
    unknown: list[str] = field(default_factory=list)  # ids not in the item table, left out
    truncated: int = 0  # known items dropped from the front (history longer than max_len)


class HistoryScorer:
    """model.onnx of an artifact folder behind `encode` and `score` (see the module doc)."""

    def __init__(self, folder: Path, device: str = "cpu", threads: int | None = None) -> None:
        self.model = OnnxRecommender(folder, device, threads)
        self.folder = Path(folder)
        self.max_len, self.top_k = self.model.max_len, self.model.top_k
        self.original: list[Any] = self.model.metadata["item_ids"]
        self.lookup = {str(original): internal for internal, original in enumerate(self.original, start=1)}
        self.batch_wide = batch_wide_ops(self.folder / MODEL_FILE)
        self.row_at_a_time = bool(self.batch_wide)

    def encode(self, history: list[str], where: str = "history") -> Encoded:
        """Internal ids of a history; a RequestError (422) when no id is known."""
        ids = [self.lookup.get(item) for item in history]
        unknown = [item for item, i in zip(history, ids) if i is None]
        known = np.array([i for i in ids if i is not None], dtype=np.int64)
        if not len(known):
            shown = ", ".join(repr(i) for i in history[:5]) + (", ..." if len(history) > 5 else "")
            raise RequestError(422, "no_known_item", f"{where}: no known item id in [{shown}] (ids are the original "
                                                     "item ids of the training data)")
        truncated = max(0, len(known) - self.max_len)
        return Encoded(known[truncated:], unknown, truncated)

    def score(self, rows: list[np.ndarray], max_batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """(scores [N, K], internal ids [N, K]) of encoded histories, best first, their own items left out."""
        step = 1 if self.row_at_a_time else max(1, max_batch)
        scores, ids = [], []
        for start in range(0, len(rows), step):
            padded = left_pad(rows[start : start + step], self.max_len)
            s, i = self.model.topk(padded, (padded > 0).astype(np.int64))
            scores.append(s)
            ids.append(i)
        return np.concatenate(scores), np.concatenate(ids)

    def items(self, internal: np.ndarray) -> list[Any]:
        return [self.original[int(i) - 1] for i in internal]

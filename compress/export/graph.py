"""Small rewrites of saved ONNX graphs (torch-free).

Constant folding (the exporter's, onnxruntime's optimiser, quant_pre_process) turns the tied
item table's `table.T` for scoring into a second, transposed copy of the table: the artifact
then stores the largest weight twice. `share_transposed_initializers` stores it once and
computes the transpose with a Transpose node; onnxruntime folds that node again when it loads
the model, in memory only, so serving speed does not change.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from compress.runs.files import atomic_write


def share_transposed_initializers(path: Path) -> int:
    """Rewrite the model at `path` so no 2-D initializer is stored with its transpose; return bytes saved."""
    model = onnx.load(str(path))
    graph = model.graph
    matrices = {t.name: numpy_helper.to_array(t) for t in graph.initializer if len(t.dims) == 2}
    looked_up = {n.input[0] for n in graph.node if n.op_type == "Gather"}
    replaced: dict[str, str] = {}  # transposed copy -> the initializer it is the transpose of
    names = sorted(matrices, key=lambda name: name not in looked_up)  # keep the lookup table's rows
    for i, kept in enumerate(names):
        if kept in replaced:
            continue
        for copy in names[i + 1:]:
            if copy not in replaced and _is_transpose(matrices[kept], matrices[copy]):
                replaced[copy] = kept
    if not replaced:
        return 0
    saved = sum(matrices[name].nbytes for name in replaced)
    kept_initializers = [t for t in graph.initializer if t.name not in replaced]
    del graph.initializer[:]
    graph.initializer.extend(kept_initializers)
    inputs = [i for i in graph.input if i.name not in replaced]
    del graph.input[:]
    graph.input.extend(inputs)
    transposes = [
        helper.make_node("Transpose", [kept], [copy], name=f"share_transpose_{copy}", perm=[1, 0])
        for copy, kept in replaced.items()
    ]
    nodes = transposes + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    atomic_write(Path(path), lambda tmp: onnx.save(model, str(tmp)))
    return int(saved)


def _is_transpose(first: np.ndarray, second: np.ndarray) -> bool:
    return first.shape == second.shape[::-1] and first.dtype == second.dtype and np.array_equal(first.T, second)


def sort_nodes(path: Path) -> None:
    """Re-order the nodes of the model at `path` topologically, counting the outer values that the
    subgraphs of If/Loop nodes read (onnxruntime's quantizer sorts without them)."""
    model = onnx.load(str(path))
    graph = model.graph
    produced = {out: i for i, node in enumerate(graph.node) for out in node.output}
    needs = [{produced[name] for name in _reads(node) if name in produced} for node in graph.node]
    placed: list[int] = []
    done: set[int] = set()
    while len(placed) < len(graph.node):
        ready = [i for i in range(len(graph.node)) if i not in done and needs[i] <= done]
        if not ready:
            raise ValueError(f"{path}: the graph has a cycle")
        placed += ready
        done |= set(ready)
    nodes = [graph.node[i] for i in placed]
    del graph.node[:]
    graph.node.extend(nodes)
    atomic_write(Path(path), lambda tmp: onnx.save(model, str(tmp)))


def _reads(node: onnx.NodeProto) -> set[str]:
    """Every value `node` reads: its inputs and, for If/Loop, whatever its subgraphs read."""
    names = set(node.input)
    for attribute in node.attribute:
        for sub in ([attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else list(attribute.graphs)):
            for inner in sub.node:
                names |= _reads(inner)
    return names

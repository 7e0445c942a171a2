"""int8 quantization of an ONNX artifact with onnxruntime.quantization (after quant_pre_process).

- dynamic: weights int8 ahead of time, activations quantized per batch at run time;
- static: QDQ nodes with activation ranges calibrated on training sequences.
The item table (the lookup Gather and the scoring MatMul against it) stays float unless
`item_table` is set, so its effect on ranking is measured on its own. Static QDQ on every op
type collapses the ranking of a trained recommender (measured: top-10 overlap 0.32); on
MatMul/Gemm only it kept 0.95, so those are the defaults.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import onnx

from compress.runs.files import read_json, write_json
from compress.errors import ArtifactError
from compress.export.config import ActivationType, CalibrateMethod, OnnxMode
from compress.export.graph import share_transposed_initializers, sort_nodes
from compress.export.item_table import PREFIX, PackedTable, store_packed_table
from compress.serve.onnx_model import METADATA_FILE, MODEL_FILE, import_onnxruntime, read_metadata

DEFAULT_OP_TYPES: dict[str, list[str]] = {"dynamic": ["MatMul"], "static": ["MatMul", "Gemm"]}
TABLE_OP_TYPES = ["Gather", "MatMul", "Gemm"]


def quantize_onnx(
    source: Path,
    target: Path,
    mode: OnnxMode,
    op_types: list[str] | None = None,
    per_channel: bool = True,
    reduce_range: bool = False,
    item_table: bool = False,
    calibration: Iterable[dict[str, np.ndarray]] | None = None,
    calibrate_method: CalibrateMethod = "MinMax",
    activation_type: ActivationType = "int8",
) -> dict[str, Any]:
    """Quantize the artifact in `source` into `target` (model.onnx + metadata.json); return the metadata.

    `activation_type` (static only): int8 (S8S8) or uint8 (U8S8, the x86 kernels' native input).
    """
    import_onnxruntime()
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process
    from onnxruntime.quantization import quantize_dynamic, quantize_static

    metadata = read_metadata(source)
    if mode == "static" and calibration is None:
        raise ValueError("static quantization needs calibration inputs")
    op_types = list(op_types or DEFAULT_OP_TYPES[mode])
    source_model = onnx.load(str(Path(source) / MODEL_FILE))
    packed = PackedTable.from_graph(source_model)
    if packed is not None and item_table:
        raise ArtifactError(f"{source}: the item table is already compressed (item_table stage)",
                            "drop item_table from the quantize stage")
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target) as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        # onnxruntime's symbolic shape inference fails on fused Attention and on the Loop of a chunked-ranking
        # graph; ONNX's own shape inference is enough there
        fused_attention = _has_onnx_attention(source_model)
        skip_symbolic = fused_attention or metadata.get("item_chunk") is not None
        quant_pre_process(str(Path(source) / MODEL_FILE), str(prepared), skip_symbolic_shape=skip_symbolic)
        table_nodes = item_table_nodes(onnx.load(str(prepared)), metadata["num_items"] + 1)
        if item_table:
            op_types = sorted(set(op_types) | {"Gather"})
        common = dict(
            op_types_to_quantize=op_types,
            per_channel=per_channel,
            reduce_range=reduce_range,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=[] if item_table else table_nodes,
        )
        output = Path(scratch) / MODEL_FILE
        if mode == "dynamic":
            quantize_dynamic(str(prepared), str(output), **common)
        else:
            quantize_static(
                str(prepared), str(output), _Reader(calibration), quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8 if activation_type == "uint8" else QuantType.QInt8,
                calibrate_method=getattr(CalibrationMethod, calibrate_method),
                # opset-23 graphs: the standard QuantizeLinear's output_dtype clashes with the quantizer's
                # zero points (onnxruntime 1.32); its contrib QDQ ops load and run
                extra_options={"UseQDQContribOps": True} if fused_attention else {},
                **common,
            )
        share_transposed_initializers(output)  # quant_pre_process folds the table's transpose again
        if packed is not None and not _holds_packed_table(output):  # ... and dequantizes a packed table
            store_packed_table(output, packed)
        if metadata.get("item_chunk") is not None:
            sort_nodes(output)  # the quantizer's own sort misses what the chunked ranking's subgraphs read
        try:
            onnx.checker.check_model(str(output))
        except onnx.checker.ValidationError as exc:
            raise ArtifactError(f"the {mode} int8 graph fails onnx.checker: {exc}") from None
        shutil.move(str(output), str(target / MODEL_FILE))
    quantization = {
        "backend": "onnxruntime", "mode": mode, "op_types": op_types, "per_channel": per_channel,
        "reduce_range": reduce_range, "item_table": item_table,
        **({"calibrate_method": calibrate_method, "activation_type": activation_type} if mode == "static" else {}),
    }
    metadata = {**read_json(Path(source) / METADATA_FILE), "quantization": quantization}
    metadata.pop("step", None)  # step.onnx (incremental export) is not quantized nor copied
    write_json(target / METADATA_FILE, metadata)
    return metadata


def _has_onnx_attention(model: onnx.ModelProto) -> bool:
    """Whether the graph holds the ONNX (opset 23) Attention op; onnxruntime's symbolic shape inference
    mistakes it for its contrib Attention and rejects it, so only ONNX shape inference runs then."""
    return any(node.op_type == "Attention" and node.domain in ("", "ai.onnx") for node in model.graph.node)


def item_table_nodes(model: onnx.ModelProto, rows: int) -> list[str]:
    """Names of the nodes that read an item table (an initializer with `rows` = num_items + 1 rows or columns).

    A Gemm also gives the name of the MatMul that onnxruntime's dynamic quantizer turns it into
    (`<name>_MatMul`, before it matches `nodes_to_exclude`): the scoring Gemm with the padding bias
    would otherwise be quantized under its new name."""
    tables = {t.name for t in model.graph.initializer if len(t.dims) == 2 and rows in tuple(t.dims)}
    nodes = [n for n in model.graph.node if n.op_type in TABLE_OP_TYPES and tables & set(n.input)]
    return [name for n in nodes for name in ([n.name, f"{n.name}_MatMul"] if n.op_type == "Gemm" else [n.name])]


def _holds_packed_table(path: Path) -> bool:
    return any(t.name == f"{PREFIX}codes_0" for t in onnx.load(str(path)).graph.initializer)


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over a list of input feeds."""

    def __init__(self, feeds: Iterable[dict[str, np.ndarray]]) -> None:
        self._feeds = iter(list(feeds))

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)

"""Export and ONNX quantization settings (pydantic only, no torch or onnx)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Exporter = Literal["legacy", "dynamo"]  # torch.onnx exporters
Optimization = Literal["none", "basic", "extended"]  # onnxruntime graph optimisation saved into model.onnx
OnnxMode = Literal["dynamic", "static"]  # onnxruntime int8 quantization
CalibrateMethod = Literal["MinMax", "Entropy", "Percentile"]
ActivationType = Literal["int8", "uint8"]  # static int8: activations signed (S8S8) or unsigned (U8S8)
Engine = Literal["onnxruntime", "openvino"]  # what runs an exported artifact (openvino: the openvino extra, CPU)


class ExportSettings(BaseModel):
    """How a model becomes an ONNX graph (shared by the export stage and `compress export`)."""

    model_config = ConfigDict(extra="forbid")

    top_k: int = Field(10, ge=1, description="K of the top-K ids and scores computed inside the graph.")
    max_len: int | None = Field(
        None, ge=2,
        description="Serving window: the graph scores the last max_len events of a history (default: the "
        "model's max_len, the one it was trained with; at most that). A shorter window costs less per "
        "request; the stage's metrics and parity gate are measured with it, so its accuracy cost shows.",
    )
    exporter: Exporter = Field(
        "dynamo",
        description="torch.onnx exporter: dynamo (default; at opset 23 attention becomes one fused ONNX Attention "
        "op, 1.2-1.9x faster in onnxruntime) or legacy (TorchScript, unfused, ~20x faster to export).",
    )
    opset: int | None = Field(None, ge=14, description="ONNX opset; default 23 (dynamo) or 17 (legacy).")
    optimization: Optimization = Field(
        "basic",
        description="onnxruntime graph optimisations saved into model.onnx: basic keeps standard ONNX ops; "
        "extended adds onnxruntime-only fusions.",
    )
    item_chunk: int | None = Field(
        None, ge=1,
        description="Rank the catalogue this many items at a time inside the graph (running top-K): no "
        "[batch, items] score matrix; `scores` is then computed only when the input full_scores is true.",
    )
    incremental: bool = Field(
        False,
        description="Also write step.onnx: append-one-event scoring with cached keys/values (a KV cache; "
        "always the legacy exporter).",
    )

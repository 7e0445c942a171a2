"""An exported ONNX artifact run by OpenVINO on the CPU (the `openvino` extra; no torch import here).

OpenVINO reads the same `model.onnx` as onnxruntime, opset-23 Attention, RMSNormalization and
RotaryEmbedding included, and runs int8 QDQ graphs (NNCF's) with its int8 kernels. Float graphs
run in f32: OpenVINO would otherwise pick bf16 on CPUs that have it, and rank differently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from compress.errors import ArtifactError, CompressError
from compress.serve.onnx_model import FULL_SCORES, INPUTS, MODEL_FILE, OUTPUTS, ExportedRecommender

CONFIG = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}  # one request at a time, exact floats


def import_openvino() -> Any:
    """openvino, or a CompressError saying how to install it."""
    try:
        import openvino
    except ImportError:
        raise CompressError("OpenVINO is not installed", "pip install 'compress[openvino]'") from None
    return openvino


class OpenVinoRecommender(ExportedRecommender):
    """An exported recommender compiled by OpenVINO for the CPU (`threads`: inference threads)."""

    def __init__(self, folder: Path, threads: int | None = None) -> None:
        super().__init__(folder)
        ov = import_openvino()
        config = {**CONFIG, **({"INFERENCE_NUM_THREADS": threads} if threads else {})}
        try:
            compiled = ov.Core().compile_model(str(self.folder / MODEL_FILE), "CPU", config)
        except RuntimeError as exc:  # OpenVINO reports an unreadable or unsupported graph as a RuntimeError
            raise ArtifactError(f"OpenVINO cannot compile {self.folder / MODEL_FILE}: {exc}") from None
        names = {port.any_name for port in compiled.inputs}, {port.any_name for port in compiled.outputs}
        expected = set(INPUTS) | ({FULL_SCORES} if self.chunked else set()), set(OUTPUTS)
        if names != expected:
            raise ArtifactError(f"{self.folder / MODEL_FILE} has inputs/outputs {names}, expected {expected}")
        self.request = compiled.create_infer_request()
        self.engine = "openvino-cpu"

    def _run(
        self, outputs: list[str], item_ids: np.ndarray, attention_mask: np.ndarray, full_scores: bool = False
    ) -> list[np.ndarray]:
        result = self.request.infer(self.feeds(item_ids, attention_mask, full_scores))
        # the request reuses its output buffers: copy, so a result outlives the next call
        return [np.array(result[name]) for name in outputs]

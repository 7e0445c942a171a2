"""Export stage: the PyTorch model as a self-contained ONNX artifact, gated on ranking parity.

The artifact folder (`onnx/`) holds `model.onnx` (top-K inside the graph, onnxruntime
optimisations applied) and `metadata.json` (item id map, max length, K, provenance,
versions); `parity.json` records top-K overlap and NDCG@K against the PyTorch model. With
`incremental: true` the folder also holds `step.onnx` (append-one-event scoring over cached
keys/values, compress/export/step.py), described under `step` in the metadata, and `parity.json`
records the step's agreement with the PyTorch full pass under `step`.
"""

from __future__ import annotations

from compress.export.onnx_export import ExportSettings, export_and_check
from compress.models import load_model
from compress.stages.config import ExportConfig
from compress.handlers import Artifact, OnnxArtifact
from compress.stages.base import StageContext, StageResult


def run(ctx: StageContext, config: ExportConfig, source: Artifact) -> StageResult:
    model = load_model(source.path, "cpu")
    folder = ctx.folder / "onnx"
    provenance = {"run": ctx.folder.parent.name, "stage": ctx.folder.name, "model": str(source.path)}
    settings = ExportSettings(**config.model_dump(exclude={"stage", "parity"}))
    report = export_and_check(
        model, folder, settings, config.parity, ctx.data, ctx.data.item_ids.tolist(), provenance, ctx.log
    )
    return StageResult(OnnxArtifact(folder), {"parity": report})

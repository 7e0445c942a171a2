"""Quantize stage: int8 / half precision / 4-bit weights, gated on ranking parity with the source.

Backends, each a thin layer over its library:
- onnxruntime (an ONNX artifact in, one out; after the export stage): int8 dynamic, or static
  QDQ calibrated on training sequences;
- torch: int8 linear layers (torch.ao dynamic int8, CPU serving from PyTorch);
- fp16 / bf16: half-precision weights (CUDA; bf16 also on CPU);
- bitsandbytes: LLM.int8 or 4-bit (nf4/fp4) linear layers, for GPU memory (runs on CPU too,
  slower than fp32 there).
PyTorch-quantized models are for serving: nothing can follow them in a recipe (bitsandbytes
and torch.ao layers cannot be exported to ONNX nor trained further).
"""

from __future__ import annotations

import numpy as np

from compress.runs.files import dir_size_bytes
from compress.data.padding import left_pad
from compress.data.sequences import SequenceData
from compress.errors import RecipeError
from compress.models import load_model, save_model
from compress.models.quantized import FOUR_BIT_BLOCK, FOUR_BIT_GROUP, QuantizationSpec, four_bit_skipped, import_bitsandbytes
from compress.serve.onnx_model import OnnxRecommender
from compress.export.quantize import quantize_onnx
from compress.evaluation.parity import check_parity, onnx_parity, ranking_parity
from compress.evaluation.scoring import onnx_scores, torch_scores
from compress.stages.config import QuantizeConfig
from compress.handlers import Artifact, OnnxArtifact, TorchArtifact
from compress.stages.base import StageContext, StageResult


def run(ctx: StageContext, config: QuantizeConfig, source: Artifact) -> StageResult:
    quantize = _quantize_onnx if config.backend == "onnxruntime" else _quantize_torch
    reference, quantized, artifact, max_len = quantize(ctx, config, source)
    report = (onnx_parity(reference, artifact.path, ctx.data, max_len, config.parity) if quantized is None
              else ranking_parity(reference, quantized, ctx.data, max_len, config.parity))
    k = config.parity.k
    ctx.log(f"{config.backend} {config.mode}: top-{k} overlap with the source {report[f'overlap@{k}']:.4f}, "
            f"NDCG@{k} drop {report[f'ndcg_drop@{k}']:+.5f}; {dir_size_bytes(source.path):,} -> "
            f"{dir_size_bytes(artifact.path):,} bytes")
    check_parity(report, config.parity, artifact.path, f"quantize ({config.backend} {config.mode})")
    return StageResult(artifact, {"parity": report, "source_bytes": dir_size_bytes(source.path)})


def _quantize_onnx(ctx: StageContext, config: QuantizeConfig, source: Artifact):
    """(reference scores, None, the artifact, the histories' length): the export's serving window; the
    quantized graph is scored by each engine of the parity gate."""
    folder = ctx.folder / "onnx"
    reference = OnnxRecommender(source.path, "cpu")
    calibration = calibration_feeds(ctx.data, reference.max_len, config.calibration_users, ctx.seed)
    quantize_onnx(
        source.path, folder, config.mode, config.op_types, config.per_channel, config.reduce_range,
        config.item_table, calibration if config.mode == "static" else None, config.calibrate_method,
    )
    return onnx_scores(reference), None, OnnxArtifact(folder), reference.max_len


def _quantize_torch(ctx: StageContext, config: QuantizeConfig, source: Artifact):
    if config.backend == "torch" and ctx.device.type != "cpu":
        raise RecipeError("quantize backend torch (torch.ao dynamic int8) runs on CPU only", "set device: cpu")
    if config.backend == "bitsandbytes":
        import_bitsandbytes()
        if ctx.device.type == "cpu":
            ctx.log("bitsandbytes on CPU: works, but slower than fp32; its savings are GPU memory")
    spec = QuantizationSpec(backend=config.backend, mode=config.mode, item_table=config.item_table)
    model = load_model(source.path, "cpu")
    if config.backend == "bitsandbytes" and config.mode != "int8" and (skipped := four_bit_skipped(model)):
        ctx.log(f"{config.mode}: {len(skipped)} linear layer(s) stay fp32: bitsandbytes packs 4-bit weights in "
                f"blocks of {FOUR_BIT_BLOCK} outputs x {FOUR_BIT_GROUP} inputs, and these widths are not multiples: "
                f"{', '.join(skipped)}")
    save_model(model, ctx.model_folder, spec)
    reference = load_model(source.path, ctx.device)
    quantized = load_model(ctx.model_folder, ctx.device)
    return torch_scores(reference), torch_scores(quantized), TorchArtifact(ctx.model_folder), ctx.max_len


def calibration_feeds(data: SequenceData, max_len: int, users: int, seed: int, batch: int = 32) -> list[dict]:
    """Input feeds of training sequences (s[:-2], last max_len items) of `users` random users."""
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(data.num_users)[:users]
    feeds = []
    for start in range(0, len(chosen), batch):
        ids = left_pad([data.sequence(int(u))[:-2] for u in chosen[start : start + batch]], max_len)
        feeds.append({"item_ids": ids, "attention_mask": (ids > 0).astype(np.int64)})
    return feeds

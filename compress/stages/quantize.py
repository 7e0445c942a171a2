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

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from compress.runs.artifacts import dir_size_bytes
from compress.serve.padding import left_pad
from compress.data.sequences import SequenceData
from compress.errors import RecipeError
from compress.models import load_model, save_model
from compress.models.quantized import FOUR_BIT_BLOCK, FOUR_BIT_GROUP, QuantizationSpec, four_bit_skipped, import_bitsandbytes
from compress.serve.onnx_model import OnnxRecommender
from compress.export.quantize import quantize_onnx
from compress.evaluation.parity import ParityConfig, check_parity, onnx_scores, ranking_parity, torch_scores
from compress.stages.base import Artifact, ArtifactKind, StageContext, StageResult

NAME = "quantize"
MODES: dict[str, tuple[str, ...]] = {
    "onnxruntime": ("dynamic", "static"),
    "torch": ("int8",),
    "fp16": ("half",),
    "bf16": ("half",),
    "bitsandbytes": ("int8", "nf4", "fp4"),
}
ONNX_ONLY = ("op_types", "per_channel", "reduce_range", "calibration_users", "calibrate_method")


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage: Literal["quantize"] = "quantize"
    backend: Literal["onnxruntime", "torch", "fp16", "bf16", "bitsandbytes"] = Field(
        "onnxruntime", description="Library that quantizes and runs the model (onnxruntime needs an export first)."
    )
    mode: str | None = Field(
        None,
        description="onnxruntime: dynamic (default) | static; torch: int8; bitsandbytes: int8 (default) | nf4 | fp4.",
    )
    item_table: bool = Field(False, description="Also quantize the item table (lookup and scoring) to int8.")
    op_types: list[str] | None = Field(
        None, description="onnxruntime op types to quantize; default MatMul (dynamic), MatMul+Gemm (static)."
    )
    per_channel: bool = Field(True, description="onnxruntime: per-channel weight scales.")
    reduce_range: bool = Field(
        True,
        description="onnxruntime: 7-bit weights. Full 8-bit per-channel weights saturate on CPUs without VNNI "
        "(measured on Amazon Beauty, AVX2 AMD EPYC: top-10 overlap 0.847 with 8 bits, 0.949 with 7).",
    )
    calibration_users: int = Field(256, ge=1, description="onnxruntime static: training sequences to calibrate on.")
    calibrate_method: Literal["MinMax", "Entropy", "Percentile"] = Field(
        "MinMax", description="onnxruntime static: how activation ranges are chosen."
    )
    parity: ParityConfig = Field(
        default_factory=lambda: ParityConfig(min_overlap=0.9, max_ndcg_drop=0.02),
        description="Ranking parity gate against the unquantized source model.",
    )

    @model_validator(mode="after")
    def _check_backend(self) -> "Config":
        allowed = MODES[self.backend]
        self.mode = self.mode or allowed[0]
        if self.mode not in allowed:
            raise ValueError(f"backend {self.backend} has modes {', '.join(allowed)}; got mode {self.mode!r}")
        stray = [name for name in ONNX_ONLY if name in self.model_fields_set and self.backend != "onnxruntime"]
        if stray:
            raise ValueError(f"{', '.join(stray)} apply to backend onnxruntime only (backend is {self.backend})")
        if self.item_table and self.backend in ("fp16", "bf16"):
            raise ValueError(f"item_table: {self.backend} already halves the item table; drop item_table")
        return self


def ACCEPTS(config: Config) -> ArtifactKind:  # noqa: N802 - the registry's name for "kind taken"
    return "onnx" if config.backend == "onnxruntime" else "torch"


PRODUCES = ACCEPTS


def check_chain(config: Config, index: int, stages: list[Any]) -> None:
    """A PyTorch-quantized model is for serving: no stage may follow it."""
    if config.backend == "onnxruntime" or index == len(stages) - 1:
        return
    following = stages[index + 1].stage
    if following == "export":
        raise ValueError(
            f"stages.{index + 1} (export) cannot export a {config.backend}-quantized model: its layers have no ONNX "
            "form (both torch.onnx exporters fail). Export the float model, then quantize with backend: onnxruntime"
        )
    raise ValueError(f"stages.{index + 1} ({following}) cannot follow quantize (backend {config.backend}): "
                     "a PyTorch-quantized model can only be served; put quantize last")


def run(ctx: StageContext, config: Config, source: Artifact) -> StageResult:
    if config.backend == "onnxruntime":
        reference, quantized, artifact = _quantize_onnx(ctx, config, source)
    else:
        reference, quantized, artifact = _quantize_torch(ctx, config, source)
    report = ranking_parity(reference, quantized, ctx.data, ctx.max_len, config.parity)
    k = config.parity.k
    ctx.log(f"{config.backend} {config.mode}: top-{k} overlap with the source {report[f'overlap@{k}']:.4f}, "
            f"NDCG@{k} drop {report[f'ndcg_drop@{k}']:+.5f}; {dir_size_bytes(source.path):,} -> "
            f"{dir_size_bytes(artifact.path):,} bytes")
    check_parity(report, config.parity, artifact.path, f"quantize ({config.backend} {config.mode})")
    return StageResult(artifact, {"parity": report, "source_bytes": dir_size_bytes(source.path)})


def _quantize_onnx(ctx: StageContext, config: Config, source: Artifact):
    folder = ctx.folder / "onnx"
    calibration = calibration_feeds(ctx.data, ctx.max_len, config.calibration_users, ctx.seed)
    quantize_onnx(
        source.path, folder, config.mode, config.op_types, config.per_channel, config.reduce_range,
        config.item_table, calibration if config.mode == "static" else None, config.calibrate_method,
    )
    cpu = ["CPUExecutionProvider"]
    reference, quantized = OnnxRecommender(source.path, cpu), OnnxRecommender(folder, cpu)
    return onnx_scores(reference), onnx_scores(quantized), Artifact(folder, "onnx")


def _quantize_torch(ctx: StageContext, config: Config, source: Artifact):
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
    return torch_scores(reference), torch_scores(quantized), Artifact(ctx.model_folder, "torch")


def calibration_feeds(data: SequenceData, max_len: int, users: int, seed: int, batch: int = 32) -> list[dict]:
    """Input feeds of training sequences (s[:-2], last max_len items) of `users` random users."""
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(data.num_users)[:users]
    feeds = []
    for start in range(0, len(chosen), batch):
        ids = left_pad([data.sequence(int(u))[:-2] for u in chosen[start : start + batch]], max_len)
        feeds.append({"item_ids": ids, "attention_mask": (ids > 0).astype(np.int64)})
    return feeds

"""Item-table stage: compress the tied item table (lookup and scoring), then recover.

Methods (compress/methods/item_table.py): `rowwise` integers (8, 4 or 2 bits, per-row fp16
scale and offset), `mixed` (frequent items `high_bits`, the rest `low_bits`, the split from
training interactions), `lowrank` (truncated SVD, rank r). Recovery: a short fit distilled
from the uncompressed model (quantized codes stay fixed; the rest of the model adapts; low-rank
factors train). The output is a PyTorch model whose config.json records the table (`table`);
the export stage stores it compressed in the ONNX graph. Only export may follow.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from compress.errors import RecipeError
from compress.evaluation.metrics import evaluate_model
from compress.methods.item_table import (
    compressed_spec, factorized_table, frequency_groups, quantized_table, table_bytes, training_counts,
)
from compress.models import SequentialRecommender, load_model, save_model
from compress.runtime import distributed
from compress.stages.base import Artifact, StageContext, StageResult
from compress.training.loop import LossFn, OptimConfig, fit
from compress.training.losses import BlockMap, DistillWeights, distillation_loss

NAME = "item_table"
ACCEPTS = "torch"
PRODUCES = "torch"
DATA_PARALLEL = True  # recovery trains with fit: every rank runs it, rank 0 saves
METHOD_FIELDS = {"rowwise": {"bits"}, "mixed": {"high_bits", "low_bits", "coverage"}, "lowrank": {"rank"}}


class Recovery(OptimConfig):
    """Fine-tuning after compression, the uncompressed model as a frozen teacher."""

    epochs: int = Field(2, ge=1, description="Maximum recovery epochs.")
    weights: DistillWeights = Field(
        default_factory=lambda: DistillWeights(ce=1.0, kd=1.0), description="Loss term weights (distill's losses)."
    )


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage: Literal["item_table"] = "item_table"
    method: Literal["rowwise", "mixed", "lowrank"] = Field(
        "rowwise", description="rowwise integers | mixed (bits by item frequency) | lowrank (table = A·B)."
    )
    bits: Literal[8, 4, 2] = Field(8, description="rowwise: bits per value (per-row fp16 scale and offset).")
    high_bits: Literal[8, 4, 2] = Field(8, description="mixed: bits of the frequent items.")
    low_bits: Literal[8, 4, 2] = Field(4, description="mixed: bits of the other items.")
    coverage: float = Field(
        0.8, ge=0, le=1, description="mixed: the most frequent items that make this share of training interactions get high_bits."
    )
    rank: int = Field(16, ge=1, description="lowrank: inner dimension r (below the table width).")
    recovery: Recovery | None = Field(
        default_factory=Recovery, description="Recovery fine-tuning after compression; null: none."
    )

    @model_validator(mode="after")
    def _check_method(self) -> "Config":
        stray = set().union(*METHOD_FIELDS.values()) - METHOD_FIELDS[self.method]
        if stray & self.model_fields_set:
            raise ValueError(f"{', '.join(sorted(stray & self.model_fields_set))} do not apply to method {self.method}")
        return self


def check_chain(config: Config, index: int, stages: list[Any]) -> None:
    """A compressed table is exported (or served from PyTorch): only export may follow."""
    if index < len(stages) - 1 and stages[index + 1].stage != "export":
        raise ValueError(f"stages.{index + 1} ({stages[index + 1].stage}) cannot follow item_table: "
                         "a model with a compressed item table can only be exported; put item_table after training")


def run(ctx: StageContext, config: Config, source: Artifact) -> StageResult:
    original = load_model(source.path, ctx.device).eval().requires_grad_(False)
    if original.config.table is not None or not original.config.tie_weights:
        raise RecipeError(f"item_table: the model in {source.path} has no plain tied item table to compress "
                          "(already compressed, or tie_weights is false)")
    model = compress_model(original, config, ctx)
    before = evaluate_model(model, ctx.data, "test", ctx.eval_config, ctx.device)
    fp32_bytes = original.item_embeddings.weight.numel() * 4
    stored = table_bytes(model.item_embeddings)
    ctx.log(f"{describe(config)}: table {fp32_bytes:,} -> {stored:,} bytes ({fp32_bytes / stored:.2f}x smaller); "
            f"before recovery test ndcg@10 {before['ndcg@10']:.4f}")
    info: dict[str, Any] = {
        "method": describe(config), "table": model.config.table.model_dump(), "table_bytes": stored,
        "table_bytes_fp32": fp32_bytes, "table_bytes_ratio": stored / fp32_bytes, "metrics_before_recovery": before,
    }
    history: list[dict[str, float]] = []
    if config.recovery is not None:
        blocks = BlockMap.build(model.config.num_layers, original.config.num_layers, 1)
        result = fit(model, _recovery_loss(original, config.recovery, blocks), ctx.data, config.recovery,
                     ctx.train_context())
        info |= {"recovery_best_epoch": result.best_epoch, "recovery_epochs_run": result.epochs_run,
                 "recovery_seconds": round(result.seconds, 2)}
        history = result.history
    if distributed.is_main():
        save_model(model, ctx.model_folder)
    return StageResult(Artifact(ctx.model_folder, "torch"), {**info, "history": history})


def compress_model(original: SequentialRecommender, config: Config, ctx: StageContext) -> SequentialRecommender:
    """A copy of `original` whose item table is compressed as `config` says (the rest trainable)."""
    weight = original.item_embeddings.weight.detach().cpu()
    try:
        if config.method == "lowrank":
            table = factorized_table(weight, config.rank)
        elif config.method == "rowwise":
            table = quantized_table(weight, [config.bits], np.zeros(len(weight), dtype=np.int64))
        else:
            groups = frequency_groups(training_counts(ctx.data), config.coverage)
            table = quantized_table(weight, [config.high_bits, config.low_bits], groups)
    except ValueError as exc:
        raise RecipeError(f"item_table: {exc}") from None
    shape = original.config.model_copy(update={"table": compressed_spec(table)})
    model = SequentialRecommender(shape)
    state = {k: v for k, v in original.state_dict().items() if not k.startswith("item_embeddings.")}
    state |= {f"item_embeddings.{k}": v for k, v in table.state_dict().items()}
    model.load_state_dict(state, strict=True)
    return model.to(ctx.device).requires_grad_(True)


def describe(config: Config) -> str:
    """e.g. `rowwise int4`, `mixed int8/int4 (coverage 0.8)`, `lowrank r=16`."""
    if config.method == "rowwise":
        return f"rowwise int{config.bits}"
    if config.method == "mixed":
        return f"mixed int{config.high_bits}/int{config.low_bits} (coverage {config.coverage})"
    return f"lowrank r={config.rank}"


def _recovery_loss(teacher: SequentialRecommender, recovery: Recovery, blocks: BlockMap) -> LossFn:
    def loss_fn(model: SequentialRecommender, batch):
        return distillation_loss(
            model, teacher, batch.item_ids, batch.attention_mask, batch.targets,
            recovery.weights, blocks, recovery.softmax, recovery.num_negatives,
        )

    return loss_fn

"""Train stage: a teacher from scratch (or from a local LLaMA checkpoint) with next-item cross-entropy."""

from __future__ import annotations

from compress.runtime import distributed
from compress.training.losses import next_item_objective
from compress.models import (
    RecommenderConfig,
    SequentialRecommender,
    init_backbone_from_llama,
    save_model,
    shape_from_llama,
)
from compress.stages.config import TrainConfig
from compress.handlers import TorchArtifact
from compress.stages.base import StageContext, StageResult
from compress.training.loop import fit


def build_model(config: TrainConfig, ctx: StageContext) -> SequentialRecommender:
    shape = shape_from_llama(config.model, config.init_from) if config.init_from else config.model
    model = SequentialRecommender(
        RecommenderConfig(**shape.model_dump(), num_items=ctx.data.num_items, max_len=ctx.max_len)
    )
    if config.init_from:
        copied = init_backbone_from_llama(model, config.init_from)
        ctx.log(f"initialised {len(copied)} backbone tensors from {config.init_from}")
    return model


def run(ctx: StageContext, config: TrainConfig, source: Artifact | None) -> StageResult:
    model = build_model(config, ctx)
    ctx.log(f"model: {model.num_parameters():,} parameters, {config.model.num_layers} layers")

    loss_fn = next_item_objective(config.softmax, config.num_negatives)
    result = fit(model, loss_fn, ctx.data, config, ctx.train_context())
    if distributed.is_main():
        save_model(model, ctx.model_folder)
    info = {"best_epoch": result.best_epoch, "epochs_run": result.epochs_run, "train_seconds": round(result.seconds, 2)}
    return StageResult(TorchArtifact(ctx.model_folder), {**info, "history": result.history})

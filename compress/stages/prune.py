"""Prune stage: remove decoder layers (depth) and attention heads / MLP channels (width), then recover.

Depth: ShortGPT's Block Influence of every layer on training sequences; the least influential
layers go. Width: torch-pruning, heads in whole kv groups and MLP channels, by magnitude or
Taylor importance (`compress.methods.surgery.prune_width`). Depth goes first, then width.
Recovery: a short fit distilled from the model before pruning (the distill stage's losses).
The stage's info holds the test metrics right after pruning, before recovery.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from compress.data.batching import train_batches
from compress.errors import RecipeError
from compress.evaluation.metrics import evaluate_model
from compress.methods.layer_importance import block_influence, select_layers
from compress.training.losses import BlockMap, next_item_objective
from compress.models import SequentialRecommender, load_model
from compress.methods.surgery import CalibrationLosses, keep_layers, prune_width
from compress.methods.pruning import PrunePlan, plan_pruning
from compress.stages.config import PruneConfig, Recovery
from compress.handlers import Artifact
from compress.stages.base import StageContext, StageResult, recover_and_save


def run(ctx: StageContext, config: PruneConfig, source: Artifact) -> StageResult:
    original = load_model(source.path, ctx.device).eval().requires_grad_(False)
    plan = plan_pruning(config, original.config)
    blocks = _block_map(plan, original, config.recovery) if config.recovery is not None else None
    before = original.config
    ctx.log(
        f"plan: layers {before.num_layers} -> {plan.num_layers}, heads {before.num_heads} -> {plan.num_heads} "
        f"(kv {before.num_kv_heads} -> {plan.num_kv_heads}), MLP {before.intermediate_size} -> {plan.intermediate_size}"
    )
    kept, influence = _layers_to_keep(original, plan, config, ctx)
    pruned = keep_layers(original, kept).requires_grad_(True)
    if (plan.num_heads, plan.intermediate_size) != (before.num_heads, before.intermediate_size):
        pruned = prune_width(pruned, plan.num_heads, plan.intermediate_size, config.importance,
                             _calibration_losses(ctx, config))
    pruned_metrics = evaluate_model(pruned, ctx.data, "test", ctx.eval_config, ctx.device)
    ctx.log(
        f"pruned: {pruned.num_parameters():,} of {original.num_parameters():,} parameters "
        f"({pruned.num_parameters() / original.num_parameters():.0%}); before recovery test "
        f"ndcg@10 {pruned_metrics['ndcg@10']:.4f} hr@10 {pruned_metrics['hr@10']:.4f}"
    )
    info = {
        "params_before": original.num_parameters(),
        "params_after": pruned.num_parameters(),
        "layers_kept": kept,
        "layers_removed": [i for i in range(before.num_layers) if i not in kept],
        "block_influence": influence,
        "heads_kept": f"{plan.num_heads}/{before.num_heads}",
        "kv_heads_kept": f"{plan.num_kv_heads}/{before.num_kv_heads}",
        "mlp_channels_kept": f"{plan.intermediate_size}/{before.intermediate_size}",
        "metrics_before_recovery": pruned_metrics,
    }
    recovery = config.recovery if blocks is not None else None
    return recover_and_save(ctx, pruned, original, recovery, blocks, info)


def _block_map(plan: PrunePlan, original: SequentialRecommender, recovery: Recovery) -> BlockMap:
    try:
        return BlockMap.build(plan.num_layers, original.config.num_layers, recovery.blocks)
    except ValueError as exc:
        raise RecipeError(f"prune: recovery.{exc}", "lower recovery.blocks") from None


def _layers_to_keep(
    model: SequentialRecommender, plan: PrunePlan, config: PruneConfig, ctx: StageContext
) -> tuple[list[int], list[float] | None]:
    """Indices of the layers the plan keeps (the most influential) and every layer's Block Influence."""
    depth = model.config.num_layers
    if plan.num_layers == depth:
        return list(range(depth)), None
    influence = block_influence(
        model, ctx.data, ctx.device, config.calibration_batches, config.calibration_batch_size, ctx.seed
    )
    ctx.log("block influence per layer: " + ", ".join(f"{v:.3f}" for v in influence))
    return select_layers("importance", depth, plan.num_layers, influence), influence


def _calibration_losses(ctx: StageContext, config: PruneConfig) -> CalibrationLosses:
    """Next-item losses of `calibration_batches` seeded training batches (gradients for Taylor importance)."""
    loss_fn = next_item_objective()

    def losses(model: SequentialRecommender) -> Iterator[torch.Tensor]:
        batches = train_batches(ctx.data, ctx.max_len, config.calibration_batch_size, np.random.default_rng(ctx.seed))
        for _, batch in zip(range(config.calibration_batches), batches):
            yield loss_fn(model, batch.to(ctx.device))[0]

    return losses

"""Structural edits that return a new, consistent model: keep a subset of decoder layers, or
prune attention heads and MLP channels (width) with torch-pruning."""

from __future__ import annotations

import copy
from typing import Callable, Iterable

import torch
from torch import nn

from compress.methods.config import WidthImportance
from compress.models.recommender import RecommenderConfig, SequentialRecommender

CalibrationLosses = Callable[[SequentialRecommender], Iterable[torch.Tensor]]


def keep_layers(model: SequentialRecommender, indices: list[int]) -> SequentialRecommender:
    """A copy of `model` with only the decoder layers at `indices` (in that order).

    Everything else (item table, projections, final norm, output table, a fixed prompt) is copied as is;
    the config's `num_layers` matches the new depth, so the result saves and loads normally.
    """
    depth = model.config.num_layers
    if not indices:
        raise ValueError("keep at least one layer")
    if len(set(indices)) != len(indices) or not all(0 <= i < depth for i in indices):
        raise ValueError(f"layer indices {indices} must be distinct and within 0..{depth - 1}")
    new = SequentialRecommender(model.config.model_copy(update={"num_layers": len(indices)}))
    renamed = {f"layers.{old}.": f"layers.{new_index}." for new_index, old in enumerate(indices)}
    state: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if key.startswith("backbone.layers."):
            prefix = "layers." + key.split(".")[2] + "."
            if prefix not in renamed:
                continue
            key = key.replace("backbone." + prefix, "backbone." + renamed[prefix], 1)
        state[key] = value.detach().clone()
    new.load_state_dict(state, strict=True)
    return new.to(next(model.parameters()).device).train(model.training)  # the copy in the original's mode


def prune_width(
    model: SequentialRecommender,
    num_heads: int,
    intermediate_size: int,
    importance: WidthImportance = "magnitude",
    calibration_losses: CalibrationLosses | None = None,
) -> SequentialRecommender:
    """A copy of `model` with `num_heads` query heads and `intermediate_size` MLP channels per layer.

    MLP channels: torch-pruning's MetaPruner over its dependency graph (gate/up outputs with
    down inputs), rooted at the MLP only, so the hidden size is kept. Heads go in whole kv
    groups (a key/value head, the query heads that share it, their o_proj inputs), pruned with
    torch-pruning's linear pruning functions: its dependency graph never finishes grouping
    q_proj/k_proj of grouped-query attention with RoPE (torch-pruning 1.6.1, transformers 5;
    VainF/Torch-Pruning#527). Importance: `magnitude` (sum of squared weights) or `taylor`
    (sum of |weight x gradient|, gradients of `calibration_losses`). The least important go,
    the same count in every layer; the result's config matches its weights.
    """
    config = model.config
    group = config.num_heads // config.num_kv_heads
    if not 1 <= intermediate_size <= config.intermediate_size:
        raise ValueError(f"intermediate_size {intermediate_size} must be within 1..{config.intermediate_size}")
    if not group <= num_heads <= config.num_heads or num_heads % group:
        raise ValueError(f"num_heads {num_heads} must be a multiple of {group} within {group}..{config.num_heads}")
    if importance == "taylor" and calibration_losses is None:
        raise ValueError("taylor importance needs calibration_losses to compute gradients")
    work = copy.deepcopy(model).eval().requires_grad_(True)
    if importance == "taylor":
        for loss in calibration_losses(work):
            loss.backward()
    if intermediate_size < config.intermediate_size:
        _prune_mlp(work, intermediate_size, importance)
    if num_heads < config.num_heads:
        for layer in work.backbone.layers:
            _prune_kv_groups(layer.self_attn, config, num_heads // group, importance)
    update = {"num_heads": num_heads, "num_kv_heads": num_heads // group, "intermediate_size": intermediate_size}
    pruned = SequentialRecommender(RecommenderConfig.model_validate({**config.model_dump(), **update}))
    pruned.load_state_dict(work.state_dict(), strict=True)
    return pruned.to(next(model.parameters()).device)


def _prune_mlp(work: SequentialRecommender, keep: int, importance: WidthImportance) -> None:
    import torch_pruning as tp  # heavy, and only needed here

    roots = [m for layer in work.backbone.layers for m in (layer.mlp.gate_proj, layer.mlp.up_proj)]
    ignored = [m for m in work.modules() if isinstance(m, (nn.Linear, nn.Embedding)) and all(m is not r for r in roots)]
    norms = [(p, 0) for name, p in work.named_parameters() if name.endswith("norm.weight")]
    device = next(work.parameters()).device
    length = min(work.config.max_len, 8)
    ids = (torch.arange(length, device=device) % work.config.num_items + 1)[None]
    scorer = tp.importance.GroupTaylorImportance() if importance == "taylor" else tp.importance.GroupMagnitudeImportance(p=2)
    pruner = tp.pruner.MetaPruner(
        work,
        example_inputs=(ids, torch.ones_like(ids)),
        forward_fn=lambda model, inputs: model(*inputs, last_only=model.config.prompted)[0],
        importance=scorer,
        pruning_ratio=1 - (keep + 0.5) / work.config.intermediate_size,  # +0.5: exactly `keep` after rounding down
        ignored_layers=ignored,
        unwrapped_parameters=norms,
    )
    pruner.step()


def _prune_kv_groups(attention: nn.Module, config: RecommenderConfig, keep: int, importance: WidthImportance) -> None:
    """Remove the least important kv groups of one attention layer, in place."""
    import torch_pruning as tp

    head_dim, group = config.head_dim, config.num_heads // config.num_kv_heads
    kv_width, q_width = head_dim, head_dim * group  # channels of one kv group in k/v and in q/o

    def saliency(weight: nn.Parameter) -> torch.Tensor:
        return weight.detach() ** 2 if importance == "magnitude" else (weight.detach() * weight.grad).abs()

    scores = torch.zeros(config.num_kv_heads)
    for linear, width, dim in ((attention.q_proj, q_width, 0), (attention.k_proj, kv_width, 0),
                               (attention.v_proj, kv_width, 0), (attention.o_proj, q_width, 1)):
        per_channel = saliency(linear.weight).sum(dim=1 - dim)
        scores += per_channel.view(config.num_kv_heads, width).sum(dim=1).cpu()
    dropped = sorted(torch.argsort(scores)[: config.num_kv_heads - keep].tolist())
    kv_channels = [c for g in dropped for c in range(g * kv_width, (g + 1) * kv_width)]
    q_channels = [c for g in dropped for c in range(g * q_width, (g + 1) * q_width)]
    tp.prune_linear_out_channels(attention.q_proj, q_channels)
    tp.prune_linear_out_channels(attention.k_proj, kv_channels)
    tp.prune_linear_out_channels(attention.v_proj, kv_channels)
    tp.prune_linear_in_channels(attention.o_proj, q_channels)

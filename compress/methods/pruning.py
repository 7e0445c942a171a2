"""Pruning targets: what a recipe asks for (counts, ratios or a parameter budget) as concrete counts.

Every dimension is asked for in one way at most: depth by `num_layers` (keep) or `remove_layers`,
attention by `num_heads` (query heads to keep) or `head_ratio`, the MLP by `intermediate_size`
(channels to keep) or `mlp_ratio`; or all at once by `target_params`. Heads go in whole kv groups
(a key/value head with the query heads that share it), so kept query heads are a multiple of
the group size and grouped-query attention stays consistent.

`target_params` (the fraction of the input's parameters to keep) becomes counts by trying every
(layers, kv groups) pair the dimensions in `budget_dims` allow, each with as many MLP channels
as fit the budget (when `mlp` may shrink), and keeping the most balanced fit: the largest
smallest kept fraction over those dimensions, then the most parameters. Deterministic, and no
dimension is cut harder than the budget needs; where whole layers are the balanced choice the
model can sit below the budget by up to about one layer's share.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import product
import torch

from compress.errors import RecipeError
from compress.methods.config import Dimension, PruneTargets
from compress.models import RecommenderConfig, SequentialRecommender



@dataclass(frozen=True)
class PrunePlan:
    """Concrete counts per layer of the pruned model."""

    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int

    def apply_to(self, config: RecommenderConfig) -> RecommenderConfig:
        """The model config with these counts (head_dim and hidden_size unchanged)."""
        update = {k: getattr(self, k) for k in ("num_layers", "num_heads", "num_kv_heads", "intermediate_size")}
        return RecommenderConfig.model_validate({**config.model_dump(), **update})


def plan_pruning(targets: PruneTargets, config: RecommenderConfig) -> PrunePlan:
    """Counts for `config`'s model; an impossible target is a RecipeError saying what exists."""
    if targets.target_params is not None:
        return _plan_for_budget(targets.target_params, targets.budget_dims, config)
    group = config.num_heads // config.num_kv_heads
    layers = _layers_kept(targets, config.num_layers)
    groups = _kept("num_heads", targets.num_heads, targets.head_ratio, config.num_heads, config.num_kv_heads, group)
    channels = _kept("intermediate_size", targets.intermediate_size, targets.mlp_ratio, config.intermediate_size,
                     config.intermediate_size, 1)
    return PrunePlan(layers, groups * group, groups, channels)


def _layers_kept(targets: PruneTargets, depth: int) -> int:
    if targets.num_layers is not None:
        if targets.num_layers > depth:
            raise RecipeError(f"prune: num_layers asks to keep {targets.num_layers} layers but the model has {depth}",
                              f"num_layers is at most {depth}")
        return targets.num_layers
    removed = targets.remove_layers or 0
    if removed >= depth:
        raise RecipeError(f"prune: remove_layers ({removed}) would remove every one of the model's {depth} layers",
                          f"remove at most {depth - 1}")
    return depth - removed


def _kept(name: str, count: int | None, ratio: float | None, total: int, units: int, unit_size: int) -> int:
    """Units (kv groups or channels) kept of `units`, from a kept count (of total = units x unit_size) or a ratio."""
    if count is not None:
        if count > total:
            raise RecipeError(f"prune: {name} asks to keep {count} but the model has {total}", f"{name} is at most {total}")
        if count % unit_size:
            raise RecipeError(
                f"prune: {name} ({count}) must be a multiple of {unit_size}: {unit_size} query heads share each kv head "
                "and heads are pruned in whole kv groups",
                f"use one of {list(range(unit_size, total + 1, unit_size))}",
            )
        return count // unit_size
    kept = units - int(units * (ratio or 0.0) + 0.5)
    if kept < 1:
        raise RecipeError(f"prune: the ratio {ratio} removes all {units} prunable units of {name}",
                          f"a ratio below {1 - 0.5 / units:.3f} keeps at least one")
    return kept


def _plan_for_budget(fraction: float, dims: list[Dimension], config: RecommenderConfig) -> PrunePlan:
    budget = fraction * count_parameters(config)
    group = config.num_heads // config.num_kv_heads
    layer_options = range(1, config.num_layers + 1) if "layers" in dims else [config.num_layers]
    group_options = range(1, config.num_kv_heads + 1) if "heads" in dims else [config.num_kv_heads]
    best, best_key = None, None
    for layers, groups in product(layer_options, group_options):
        plan: PrunePlan | None = PrunePlan(layers, groups * group, groups, config.intermediate_size)
        if "mlp" in dims:
            plan = _widest_mlp(plan, budget, config)
        if plan is None or (params := count_parameters(plan.apply_to(config))) > budget:
            continue
        kept = {"layers": layers / config.num_layers, "heads": groups / config.num_kv_heads,
                "mlp": plan.intermediate_size / config.intermediate_size}
        key = (min(kept[d] for d in dims), params)
        if best_key is None or key > best_key:
            best, best_key = plan, key
    if best is None:
        smallest = PrunePlan(min(layer_options), min(group_options) * group, min(group_options),
                             1 if "mlp" in dims else config.intermediate_size)
        reachable = count_parameters(smallest.apply_to(config)) / count_parameters(config)
        raise RecipeError(
            f"prune: target_params {fraction} cannot be reached by pruning {', '.join(dims)}: the smallest such model "
            f"keeps {reachable:.3f} of the parameters (the item table is not pruned)",
            f"ask for target_params >= {reachable:.3f}, or add dimensions to budget_dims",
        )
    return best


def _widest_mlp(plan: PrunePlan, budget: float, config: RecommenderConfig) -> PrunePlan | None:
    """`plan` with the most MLP channels that fit `budget` (parameters are linear in them); None if none fit."""
    one, two = (count_parameters(replace(plan, intermediate_size=i).apply_to(config)) for i in (1, 2))
    channels = min(config.intermediate_size, 1 + int((budget - one) // (two - one)))
    return replace(plan, intermediate_size=channels) if channels >= 1 else None


def count_parameters(config: RecommenderConfig) -> int:
    """Parameters of a model with `config`, built on the meta device (no memory, no init cost)."""
    with torch.device("meta"):
        return SequentialRecommender(config).num_parameters()

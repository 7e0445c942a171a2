"""Structural edits that return a new, consistent model: keep a subset of decoder layers."""

from __future__ import annotations

import torch

from compress.models.recommender import SequentialRecommender


def keep_layers(model: SequentialRecommender, indices: list[int]) -> SequentialRecommender:
    """A copy of `model` with only the decoder layers at `indices` (in that order).

    Everything else (item table, projections, final norm, output table) is copied as is;
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
    return new.to(next(model.parameters()).device)

"""What a recipe asks of the compression methods: layer selection, width importance, pruning
targets (pydantic only, no torch)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Selection = Literal["first", "uniform", "importance"]  # which teacher layers a student keeps
WidthImportance = Literal["magnitude", "taylor"]  # how heads and MLP channels are ranked
Dimension = Literal["layers", "heads", "mlp"]
_PAIRS = (("num_layers", "remove_layers"), ("num_heads", "head_ratio"), ("intermediate_size", "mlp_ratio"))


class PruneTargets(BaseModel):
    model_config = ConfigDict(extra="forbid")

    num_layers: int | None = Field(None, ge=1, description="Decoder layers to keep (the least important go).")
    remove_layers: int | None = Field(None, ge=0, description="Decoder layers to remove, least important first.")
    num_heads: int | None = Field(
        None, ge=1, description="Query heads to keep per layer; a multiple of the query heads per kv head."
    )
    head_ratio: float | None = Field(
        None, ge=0, lt=1, description="Fraction of each layer's kv groups (kv head + its query heads) to remove."
    )
    intermediate_size: int | None = Field(None, ge=1, description="MLP channels to keep per layer.")
    mlp_ratio: float | None = Field(None, ge=0, lt=1, description="Fraction of each layer's MLP channels to remove.")
    target_params: float | None = Field(
        None, gt=0, le=1, description="Fraction of the input's parameters to keep; sets the counts of budget_dims."
    )
    budget_dims: list[Dimension] = Field(
        ["layers", "heads", "mlp"], min_length=1, description="What target_params may shrink: layers, heads, mlp."
    )

    @model_validator(mode="after")
    def _one_way_per_dimension(self) -> "PruneTargets":
        for count, ratio in _PAIRS:
            if getattr(self, count) is not None and getattr(self, ratio) is not None:
                raise ValueError(f"set {count} or {ratio}, not both: they ask for the same dimension twice")
        explicit = [name for pair in _PAIRS for name in pair if getattr(self, name) is not None]
        if self.target_params is not None and explicit:
            raise ValueError(
                f"target_params decides the counts itself: drop {', '.join(explicit)}, "
                "or drop target_params and keep the explicit targets"
            )
        if self.target_params is None and not explicit:
            raise ValueError(
                "nothing to prune: set target_params, or one of num_layers/remove_layers, "
                "num_heads/head_ratio, intermediate_size/mlp_ratio"
            )
        return self

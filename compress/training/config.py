"""Training settings of a recipe: optimisation and distillation loss weights (pydantic only, no torch)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Softmax = Literal["full", "sampled"]  # next-item cross-entropy over all items, or against sampled negatives


class OptimConfig(BaseModel):
    """Optimisation settings common to every training stage."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(20, ge=1, description="Maximum epochs.")
    batch_size: int = Field(128, ge=1, description="Sequences per step.")
    lr: float = Field(1e-3, gt=0, description="Peak learning rate (AdamW).")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="Fraction of steps of linear warm-up.")
    grad_clip: float = Field(1.0, ge=0, description="Max gradient norm (0: off).")
    patience: int = Field(3, ge=0, description="Stop after this many evaluations without improvement (0: never).")
    max_steps_per_epoch: int | None = Field(None, ge=1, description="Cap on steps per epoch (quick runs).")
    softmax: Softmax = Field("full", description="Next-item cross-entropy over all items or sampled.")
    num_negatives: int = Field(1000, ge=1, description="Shared negatives per step for softmax: sampled.")
    sliding_windows: bool = Field(
        False,
        description="Train on every max_len window of a long history (stepping back from its end), not only the most recent.",
    )
    eval_users: int | None = Field(None, ge=1, description="Validate on the first N users only (default: all).")


class DistillWeights(BaseModel):
    """One weight per loss term; 0 turns a term off."""

    model_config = ConfigDict(extra="forbid")

    ce: float = Field(1.0, ge=0, description="Next-item cross-entropy on the student's output.")
    cosine: float = Field(0.0, ge=0, description="Hidden-state alignment, (1 - cosine similarity), per block.")
    l2: float = Field(0.0, ge=0, description="Hidden-state alignment, L2 distance, per block.")
    multi_supervision: float = Field(0.0, ge=0, description="Cross-entropy of the scoring head on intermediate blocks.")
    kd: float = Field(0.0, ge=0, description="KL divergence to the teacher's item distribution (logit distillation).")
    temperature: float = Field(2.0, gt=0, description="Softmax temperature of the kd term.")

    @model_validator(mode="after")
    def _some_term(self) -> "DistillWeights":
        if not any((self.ce, self.cosine, self.l2, self.multi_supervision, self.kd)):
            raise ValueError("every loss weight is 0: turn on at least one of ce, cosine, l2, multi_supervision, kd")
        return self

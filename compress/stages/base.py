"""What every stage gets (a context) and gives back (an artifact and a few facts)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from compress.handlers import Artifact, TorchArtifact
from compress.data.sequences import SequenceData
from compress.evaluation.config import EvalConfig
from compress.training.loop import TrainContext

CHECKPOINT_FILE = "checkpoint.pt"


@dataclass
class StageResult:
    artifact: Artifact
    info: dict[str, Any] = field(default_factory=dict)  # e.g. best epoch, training seconds


@dataclass
class StageContext:
    data: SequenceData
    max_len: int
    eval_config: EvalConfig
    device: torch.device
    seed: int
    folder: Path  # this stage's output folder
    log: Callable[[str], None] = print
    show_progress: bool = True

    @property
    def model_folder(self) -> Path:
        return self.folder / "model"

    def train_context(self) -> TrainContext:
        return TrainContext(
            device=self.device,
            seed=self.seed,
            max_len=self.max_len,
            eval_config=self.eval_config,
            checkpoint=self.folder / CHECKPOINT_FILE,
            log=self.log,
            show_progress=self.show_progress,
        )


def recover_and_save(
    ctx: StageContext,
    model: torch.nn.Module,
    original: torch.nn.Module,
    recovery: Any,
    blocks: Any,
    info: dict[str, Any],
) -> StageResult:
    """The KD recovery fine-tune of a compressed `model` from its `original` (skipped when `recovery`
    is None), then the saved artifact; shared by prune and item_table."""
    return save_result(ctx, model, {**info, **recover(ctx, model, original, recovery, blocks)})


def recover(ctx: StageContext, model: torch.nn.Module, original: torch.nn.Module, recovery: Any, blocks: Any) -> dict[str, Any]:
    """Fine-tune `model` in place, distilled from `original`, and keep it only if it beats the model
    before on validation NDCG@10 (the users the fit validates on); what happened, for the stage's info."""
    from compress.training.loop import SELECTION_METRIC, fit, validate, validation_config
    from compress.training.losses import distillation_objective

    if recovery is None:
        return {"history": []}
    before = validate(model, ctx.data, validation_config(ctx.eval_config, recovery), ctx.device)[SELECTION_METRIC]
    untouched = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
    loss_fn = distillation_objective(original, recovery.weights, blocks, recovery.softmax, recovery.num_negatives)
    result = fit(model, loss_fn, ctx.data, recovery, ctx.train_context())
    kept = result.best_metric > before
    if not kept:
        model.load_state_dict(untouched)
    ctx.log(f"recovery: valid ndcg@10 {before:.4f} before, {result.best_metric:.4f} after; "
            + ("kept the recovered model" if kept else "kept the model before recovery (recovery did not help)"))
    return {"recovery_best_epoch": result.best_epoch, "recovery_epochs_run": result.epochs_run,
            "recovery_seconds": round(result.seconds, 2), "recovery_valid_ndcg@10_before": before,
            "recovery_valid_ndcg@10_after": result.best_metric, "recovery_kept": kept, "history": result.history}


def save_result(ctx: StageContext, model: torch.nn.Module, info: dict[str, Any]) -> StageResult:
    """Save `model` as this stage's torch artifact (on the main process) and return it with `info`."""
    from compress.models import save_model
    from compress.runtime import distributed

    if distributed.is_main():
        save_model(model, ctx.model_folder)
    return StageResult(TorchArtifact(ctx.model_folder), {"history": [], **info})

"""What every stage gets (a context) and gives back (an artifact and a few facts)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from compress.data.sequences import SequenceData
from compress.evaluation.config import EvalConfig
from compress.stages.config import ArtifactKind
from compress.training.loop import TrainContext

CHECKPOINT_FILE = "checkpoint.pt"


@dataclass(frozen=True)
class Artifact:
    """A model a stage wrote: a torch model folder (config.json + model.safetensors) or an ONNX folder."""

    path: Path
    kind: ArtifactKind

    @classmethod
    def of_entry(cls, run_dir: Path, entry: dict[str, Any]) -> "Artifact":
        """The artifact a manifest (or stage.json) entry of the run in `run_dir` points to."""
        return cls(Path(run_dir) / entry["output"], entry["kind"])


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
    from compress.models import save_model
    from compress.runtime import distributed
    from compress.training.loop import fit
    from compress.training.losses import distillation_objective

    history: list[dict[str, float]] = []
    if recovery is not None:
        loss_fn = distillation_objective(original, recovery.weights, blocks, recovery.softmax, recovery.num_negatives)
        result = fit(model, loss_fn, ctx.data, recovery, ctx.train_context())
        info = {**info, "recovery_best_epoch": result.best_epoch, "recovery_epochs_run": result.epochs_run,
                "recovery_seconds": round(result.seconds, 2)}
        history = result.history
    if distributed.is_main():
        save_model(model, ctx.model_folder)
    return StageResult(Artifact(ctx.model_folder, "torch"), {**info, "history": history})

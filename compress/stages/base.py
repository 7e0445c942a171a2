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

"""What every artifact handler offers, and the lookup from a manifest's `kind` to its handler."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import numpy as np

if TYPE_CHECKING:
    import torch

    from compress.data.batching import Split
    from compress.data.sequences import SequenceData
    from compress.evaluation.config import EvalConfig
    from compress.models import RecommenderConfig

PredictFn = Callable[[np.ndarray, np.ndarray], Any]  # (item_ids, attention_mask) [B, L] int64 -> scores


@dataclass
class Predictor:
    """A loaded model as the benchmark sees it."""

    predict: PredictFn
    engine: str
    params: int
    max_len: int
    config: RecommenderConfig | None = None  # the architecture, for the FLOP count (None: unknown)


@dataclass(frozen=True)
class Artifact(ABC):
    """A model a stage wrote, at `path`; subclasses say how to load, score and time their kind."""

    path: Path
    kind: ClassVar[str]

    @abstractmethod
    def device(self, device: torch.device) -> torch.device:
        """Where this artifact runs in a session on `device`."""

    @abstractmethod
    def evaluate(self, data: SequenceData, config: EvalConfig, device: torch.device) -> tuple[int, dict[str, float]]:
        """Parameter count and full-ranking test metrics, as the pipeline records them."""

    @abstractmethod
    def ranks(self, data: SequenceData, config: EvalConfig, device: torch.device, split: Split = "test") -> np.ndarray:
        """0-based target ranks of every evaluated user of `split`, in user order."""

    @abstractmethod
    def predictor(self, device: torch.device, threads: int | None = None) -> Predictor:
        """The loaded model as a predict function over int64 (item_ids, attention_mask)."""

    @property
    def identity(self) -> tuple:
        """What makes two handlers the same model run the same way (a bench round measures it once)."""
        return (self.kind, self.path.resolve())

    def served_by(self, engine: str) -> Artifact:
        """This artifact run by `engine` where its kind has a choice (ONNX: onnxruntime or openvino); else itself."""
        return self

    def step_model(self) -> Path | None:
        """The KV-cached append-one-event graph, where the artifact has one."""
        return None


def _handlers() -> dict[str, type[Artifact]]:
    from compress.handlers.onnx import OnnxArtifact
    from compress.handlers.pytorch import TorchArtifact

    return {handler.kind: handler for handler in (TorchArtifact, OnnxArtifact)}


def artifact_of(path: Path, kind: str) -> Artifact:
    """The handler of an artifact of `kind` ("torch" or "onnx") at `path`."""
    return _handlers()[kind](Path(path))


def artifact_of_entry(run_dir: Path, entry: dict[str, Any]) -> Artifact:
    """The artifact a manifest (or stage.json) entry of the run in `run_dir` points to."""
    return artifact_of(Path(run_dir) / entry["output"], entry["kind"])

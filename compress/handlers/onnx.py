"""An ONNX folder (model.onnx + metadata.json, maybe step.onnx), scored by onnxruntime or OpenVINO."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch

from compress.export.config import Engine
from compress.handlers.base import Artifact, Predictor

if TYPE_CHECKING:
    from compress.data.batching import Split
    from compress.data.sequences import SequenceData
    from compress.evaluation.config import EvalConfig
    from compress.serve.onnx_model import ExportedRecommender

STEP_FILE = "step.onnx"


@dataclass(frozen=True)
class OnnxArtifact(Artifact):
    kind: ClassVar[str] = "onnx"
    engine: Engine = "onnxruntime"  # what runs the graph

    def device(self, device: torch.device) -> torch.device:
        """The session's device, but the CPU where the engine has no CUDA (OpenVINO; onnxruntime without
        its CUDA provider)."""
        from compress.serve.onnx_model import onnx_device

        if device.type == "cuda" and (self.engine != "onnxruntime" or onnx_device("cuda") == "cpu"):
            return torch.device("cpu")
        return device

    @property
    def identity(self) -> tuple:
        return (self.kind, self.path.resolve(), self.engine)

    def served_by(self, engine: Engine) -> OnnxArtifact:
        return replace(self, engine=engine)

    def load(self, device: torch.device, threads: int | None = None) -> ExportedRecommender:
        from compress.serve.onnx_model import load_recommender

        return load_recommender(self.path, self.engine, self.device(device).type, threads=threads)

    def evaluate(self, data: SequenceData, config: EvalConfig, device: torch.device) -> tuple[int, dict[str, float]]:
        from compress.evaluation.metrics import evaluate_onnx

        exported = self.load(device)
        return exported.num_parameters(), evaluate_onnx(exported, data, "test", config)

    def ranks(self, data: SequenceData, config: EvalConfig, device: torch.device, split: Split = "test") -> np.ndarray:
        from compress.evaluation.metrics import evaluation_users, score_ranks
        from compress.evaluation.scoring import onnx_scores

        exported = self.load(device)
        users = evaluation_users(data, config)
        return score_ranks(onnx_scores(exported), data, split, config, exported.max_len, users)

    def predictor(self, device: torch.device, threads: int | None = None) -> Predictor:
        """The engine's scores (`threads`: onnxruntime intra-op, OpenVINO inference threads)."""
        from compress.models import RecommenderConfig

        model = self.load(device, threads)
        shape = model.metadata.get("model")  # exports before the FLOP column lack it
        config = RecommenderConfig(**shape) if shape else None
        return Predictor(model.scores, model.engine, model.num_parameters(), model.max_len, config)

    def step_model(self) -> Path | None:
        step = self.path / STEP_FILE
        return step if step.is_file() else None

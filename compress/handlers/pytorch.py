"""A PyTorch model folder (config.json + model.safetensors), scored in eager mode."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch

from compress.handlers.base import Artifact, Predictor

if TYPE_CHECKING:
    from compress.data.batching import Split
    from compress.data.sequences import SequenceData
    from compress.evaluation.config import EvalConfig


@dataclass(frozen=True)
class TorchArtifact(Artifact):
    kind: ClassVar[str] = "torch"

    def device(self, device: torch.device) -> torch.device:
        return device

    def evaluate(self, data: SequenceData, config: EvalConfig, device: torch.device) -> tuple[int, dict[str, float]]:
        from compress.evaluation.metrics import evaluate_model
        from compress.models import load_model

        model = load_model(self.path, device)
        return model.num_parameters(), evaluate_model(model, data, "test", config, device)

    def ranks(self, data: SequenceData, config: EvalConfig, device: torch.device, split: Split = "test") -> np.ndarray:
        from compress.evaluation.metrics import evaluation_users, model_ranks, score_ranks
        from compress.evaluation.scoring import torch_scores
        from compress.models import load_model

        users = evaluation_users(data, config)
        model = load_model(self.path, device).eval()
        if config.protocol == "sampled":  # picks candidates out of the whole row of scores
            return score_ranks(torch_scores(model, device), data, split, config, model.config.max_len, users)
        return model_ranks(model, data, split, config, device, users)

    def predictor(self, device: torch.device, threads: int | None = None) -> Predictor:
        """Scores of the last position (synchronised on CUDA); threads are set around the whole
        measurement (`compress.bench.timing.torch_threads`), not here."""
        from compress.models import load_model

        model = load_model(self.path, device)

        @torch.inference_mode()
        def predict(item_ids: np.ndarray, attention_mask: np.ndarray) -> torch.Tensor:
            ids = torch.as_tensor(item_ids).to(device)
            mask = torch.as_tensor(attention_mask).to(device)
            scores = model.next_item_scores(ids, mask)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            return scores

        return Predictor(predict, "torch-eager", model.num_parameters(), model.config.max_len, model.config)

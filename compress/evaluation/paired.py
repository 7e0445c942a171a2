"""Paired comparisons of two stage artifacts on the same test users: per-user ranks, then the
bootstrap interval of the NDCG@K difference (compress/evaluation/bootstrap.py).

`artifact_ranks` reads a torch model folder (PyTorch, chunked full ranking) or an ONNX folder
(onnxruntime), so a student in its deployed format is compared with the teacher it came from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from compress.data.batching import Split
from compress.data.sequences import SequenceData
from compress.evaluation.bootstrap import PairedDifference, paired_bootstrap, per_user_ndcg
from compress.evaluation.config import EvalConfig
from compress.evaluation.metrics import evaluation_users, model_ranks, score_ranks
from compress.evaluation.scoring import onnx_scores, torch_scores

DIFFERENCE_K = 10


def artifact_ranks(
    path: Path, kind: str, data: SequenceData, config: EvalConfig, device: torch.device | str = "cpu",
    split: Split = "test",
) -> np.ndarray:
    """0-based target ranks of every evaluated user of `split` (in user order), as the pipeline evaluates them."""
    device = torch.device(device)
    users = evaluation_users(data, config)
    if kind == "onnx":
        from compress.serve.onnx_model import OnnxRecommender

        exported = OnnxRecommender(Path(path), "cpu" if device.type == "cpu" else "auto")
        return score_ranks(onnx_scores(exported), data, split, config, exported.max_len, users)
    from compress.models import load_model

    model = load_model(Path(path), device).eval()
    if config.protocol == "sampled":  # picks candidates out of the whole row of scores
        return score_ranks(torch_scores(model, device), data, split, config, model.config.max_len, users)
    return model_ranks(model, data, split, config, device, users)


def ndcg_difference(
    candidate: np.ndarray, reference: np.ndarray, k: int = DIFFERENCE_K, seed: int = 0
) -> PairedDifference:
    """candidate − reference NDCG@k over the same users, with its 95% paired-bootstrap interval."""
    return paired_bootstrap(per_user_ndcg(candidate, k), per_user_ndcg(reference, k), seed=seed)

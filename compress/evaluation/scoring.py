"""Score functions: a PyTorch model or an ONNX artifact as `batch -> scores of every item`, the one
form evaluation, parity gates and reports score models in."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch

from compress.data.batching import EvalBatch

if TYPE_CHECKING:
    from compress.serve.onnx_model import OnnxRecommender

ScoreFn = Callable[[EvalBatch], torch.Tensor]  # batch -> [B, num_items + 1] scores


def torch_scores(model: torch.nn.Module, device: torch.device | None = None) -> ScoreFn:
    """Float CPU scores of a SequentialRecommender, run on `device` (default: where its weights are)."""
    device = device or next(model.parameters()).device

    @torch.no_grad()
    def score(batch: EvalBatch) -> torch.Tensor:
        ids, mask = batch.item_ids.to(device), batch.attention_mask.to(device)
        return model.next_item_scores(ids, mask).float().cpu()

    return score


def onnx_scores(model: OnnxRecommender) -> ScoreFn:
    """Scores of an ONNX artifact run by onnxruntime."""
    return lambda batch: torch.from_numpy(model.scores(batch.item_ids.numpy(), batch.attention_mask.numpy()))

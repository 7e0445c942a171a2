"""Training losses shared by every stage that trains (train, distill, prune recovery)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from compress.models import SequentialRecommender


def next_item_loss(
    model: SequentialRecommender,
    states: torch.Tensor,
    targets: torch.Tensor,
    softmax: Literal["full", "sampled"] = "full",
    num_negatives: int = 1000,
) -> torch.Tensor:
    """Cross-entropy of the next item at every position with a target (targets > 0).

    `full` scores all items; `sampled` scores the target against `num_negatives` uniform
    negatives shared across the batch (a negative equal to the target is masked out).
    """
    selected = targets > 0
    hidden, target = states[selected], targets[selected]
    if softmax == "full":
        return F.cross_entropy(model.score(hidden).float(), target)
    table = model.item_table
    negatives = torch.randint(1, table.shape[0], (num_negatives,), device=hidden.device)
    positive = (hidden * table[target]).sum(-1, keepdim=True)
    negative = hidden @ table[negatives].t()
    negative = negative.masked_fill(negatives[None, :] == target[:, None], float("-inf"))
    logits = torch.cat([positive, negative], dim=1).float()
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))

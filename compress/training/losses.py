"""Training losses shared by every stage that trains (train, distill, prune recovery)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from compress.data.batching import TrainBatch
from compress.models import SequentialRecommender
from compress.training.config import DistillWeights, Softmax

# (model, batch) -> (loss, its terms detached): the terms stay on the device, read only where logged
LossFn = Callable[[SequentialRecommender, TrainBatch], tuple[torch.Tensor, dict[str, torch.Tensor]]]


def next_item_loss(
    model: SequentialRecommender,
    states: torch.Tensor,
    targets: torch.Tensor,
    softmax: Softmax = "full",
    num_negatives: int = 1000,
) -> torch.Tensor:
    """Cross-entropy of the next item at every position with a target (targets > 0).

    `full` scores all items; `sampled` scores the target against `num_negatives` uniform
    negatives shared across the batch (a negative equal to the target is masked out).
    """
    selected = targets > 0
    hidden, target = states[selected], targets[selected]
    if softmax == "full":
        return F.cross_entropy(item_logits(model, hidden), target - 1)
    table = model.item_table
    negatives = torch.randint(1, table.shape[0], (num_negatives,), device=hidden.device)
    positive = (hidden * table[target]).sum(-1, keepdim=True)
    negative = hidden @ table[negatives].t()
    negative = negative.masked_fill(negatives[None, :] == target[:, None], float("-inf"))
    logits = torch.cat([positive, negative], dim=1).float()
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))


def training_states(
    model: SequentialRecommender, item_ids: torch.Tensor, attention_mask: torch.Tensor,
    output_hidden_states: bool = False, last_only: bool | None = None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
    """The states a loss supervises and, if asked, the backbone's hidden states at the same positions: every
    position, or the last alone (`last_only`, default for a prompted model). A prompted model (an imported
    SLMRec teacher) has a state after its response only, so it trains as SLMRec does: on the last position,
    whose target is the sequence's next item (`supervised_targets`)."""
    last_only = model.config.prompted if last_only is None else last_only
    states, hidden = model(item_ids, attention_mask, output_hidden_states=output_hidden_states, last_only=last_only)
    if last_only and hidden is not None:
        hidden = tuple(h[:, -1:] for h in hidden)
    return states, hidden


def supervised_targets(model: SequentialRecommender, targets: torch.Tensor) -> torch.Tensor:
    """The targets of `training_states`' positions: all, or the last one of a prompted model."""
    return targets[:, -1:] if model.config.prompted else targets


def next_item_objective(softmax: Softmax = "full", num_negatives: int = 1000) -> LossFn:
    """Next-item cross-entropy at the positions `training_states` gives (train, prune's calibration)."""

    def loss_fn(model: SequentialRecommender, batch: TrainBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        states, _ = training_states(model, batch.item_ids, batch.attention_mask)
        loss = next_item_loss(model, states, supervised_targets(model, batch.targets), softmax, num_negatives)
        return loss, {"ce": loss.detach()}

    return loss_fn


def item_logits(model: SequentialRecommender, states: torch.Tensor) -> torch.Tensor:
    """Float scores of items 1..N (column j is item j + 1): no padding column to mask, whose in-place
    write would make the backward copy the whole score matrix."""
    return model.score(states, start=1).float()


@dataclass(frozen=True)
class BlockMap:
    """Aligned hidden-state indices (into the backbones' hidden_states tuples), shallow to deep.

    With B blocks, student output i*N/B is aligned with teacher output i*M/B for i = 1..B
    (SLMRec); index 0 of hidden_states is the embedding, index N the final normed state.
    """

    student: tuple[int, ...]
    teacher: tuple[int, ...]

    @classmethod
    def build(cls, student_layers: int, teacher_layers: int, blocks: int) -> "BlockMap":
        if not 1 <= blocks <= min(student_layers, teacher_layers):
            raise ValueError(
                f"blocks ({blocks}) must be between 1 and the student's layer count ({student_layers})"
                + (f" and the teacher's ({teacher_layers})" if teacher_layers < student_layers else "")
            )
        ids = range(1, blocks + 1)
        return cls(
            tuple(i * student_layers // blocks for i in ids), tuple(i * teacher_layers // blocks for i in ids)
        )


def distillation_loss(
    student: SequentialRecommender,
    teacher: SequentialRecommender,
    item_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    targets: torch.Tensor,
    weights: DistillWeights,
    blocks: BlockMap,
    softmax: Softmax = "full",
    num_negatives: int = 1000,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The weighted sum of the active terms, and each term's value (detached, on the device: no sync)."""
    need_hidden = bool(weights.cosine or weights.l2 or weights.multi_supervision)
    last_only = student.config.prompted
    states, hidden = training_states(student, item_ids, attention_mask, need_hidden, last_only)
    targets = supervised_targets(student, targets)
    selected = targets > 0
    terms: dict[str, torch.Tensor] = {}
    if weights.ce:
        terms["ce"] = next_item_loss(student, states, targets, softmax, num_negatives)
    if weights.cosine or weights.l2 or weights.kd:
        with torch.no_grad():
            teacher_states, teacher_hidden = training_states(teacher, item_ids, attention_mask, need_hidden, last_only)
    if weights.cosine or weights.l2:
        pairs = [(hidden[s][selected], teacher_hidden[t][selected]) for s, t in zip(blocks.student, blocks.teacher)]
        if weights.cosine:
            terms["cosine"] = torch.stack([(1 - F.cosine_similarity(s, t, dim=-1)).mean() for s, t in pairs]).mean()
        if weights.l2:
            terms["l2"] = torch.stack([(s - t).norm(dim=-1).mean() for s, t in pairs]).mean()
    if weights.multi_supervision:
        terms["multi_supervision"] = _intermediate_ce(student, hidden, blocks.student[:-1], selected, targets)
    if weights.kd:
        terms["kd"] = _logit_kl(student, states[selected], item_logits(teacher, teacher_states[selected]), weights.temperature)
    total = sum(getattr(weights, name) * value for name, value in terms.items())
    return total, {name: value.detach() for name, value in terms.items()}


def distillation_objective(
    teacher: SequentialRecommender, weights: DistillWeights, blocks: BlockMap, softmax: Softmax, num_negatives: int
) -> LossFn:
    """The loss `fit` trains a student with against a frozen `teacher` (distill, and prune's recovery)."""

    def loss_fn(student: SequentialRecommender, batch: TrainBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return distillation_loss(
            student, teacher, batch.item_ids, batch.attention_mask, batch.targets,
            weights, blocks, softmax, num_negatives,
        )

    return loss_fn


def _intermediate_ce(
    student: SequentialRecommender,
    hidden: tuple[torch.Tensor, ...],
    indices: tuple[int, ...],
    selected: torch.Tensor,
    targets: torch.Tensor,
) -> torch.Tensor:
    """The student's own head (final norm, projection, item table) on intermediate blocks."""
    if not indices:  # one block: the final output is already supervised by ce
        return hidden[-1].new_zeros(())
    losses = []
    for index in indices:
        states = student.output_proj(student.backbone.norm(hidden[index][selected]))
        losses.append(F.cross_entropy(item_logits(student, states), targets[selected] - 1))
    return torch.stack(losses).mean()


def _logit_kl(
    student: SequentialRecommender, student_states: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """KL(teacher || student) over real items (`item_logits` of both), scaled by T^2."""
    student_logits = item_logits(student, student_states) / temperature
    teacher_logits = teacher_logits / temperature
    kl = F.kl_div(F.log_softmax(student_logits, -1), F.log_softmax(teacher_logits, -1), log_target=True, reduction="batchmean")
    return kl * temperature**2

"""Left-padded batches for training (next item at every position) and evaluation (last item).

Leave-one-out split of a user sequence s: training uses s[:-2]; validation predicts s[-2]
from s[:-2]; test predicts s[-1] from s[:-1]. Inputs keep the most recent `max_len` items.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Literal

import numpy as np
import torch

from compress.data.sequences import SequenceData
from compress.serve.padding import left_pad

Split = Literal["valid", "test"]


@dataclass
class TrainBatch:
    item_ids: torch.Tensor  # [B, L] int64, left-padded with 0
    attention_mask: torch.Tensor  # [B, L] int64
    targets: torch.Tensor  # [B, L] int64, 0 where there is no target


@dataclass
class EvalBatch:
    users: np.ndarray  # [B] user indices
    item_ids: torch.Tensor  # [B, L]
    attention_mask: torch.Tensor  # [B, L]
    targets: torch.Tensor  # [B]


def history_and_target(data: SequenceData, user: int, split: Split) -> tuple[np.ndarray, int]:
    seq = data.sequence(user)
    cut = len(seq) - (2 if split == "valid" else 1)
    return seq[:cut], int(seq[cut])


def trainable_users(data: SequenceData) -> np.ndarray:
    """Users whose training part s[:-2] has at least one (input, target) pair."""
    return np.flatnonzero(data.lengths - 2 >= 2)


def train_batches(
    data: SequenceData,
    max_len: int,
    batch_size: int,
    generator: np.random.Generator,
    part: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Iterator[TrainBatch]:
    """One shuffled epoch: inputs s[:-3] and targets s[1:-2], last `max_len` positions.

    `part` keeps one process's share of each batch's users (data-parallel training).
    """
    users = trainable_users(data)
    users = users[generator.permutation(len(users))]
    for start in range(0, len(users), batch_size):
        chunk = users[start : start + batch_size]
        windows = [data.sequence(u)[:-2][-(max_len + 1) :] for u in (part(chunk) if part else chunk)]
        inputs = left_pad([w[:-1] for w in windows], max_len)
        targets = left_pad([w[1:] for w in windows], max_len)
        yield TrainBatch(
            item_ids=torch.from_numpy(inputs),
            attention_mask=torch.from_numpy((inputs > 0).astype(np.int64)),
            targets=torch.from_numpy(targets),
        )


def eval_batches(
    data: SequenceData, split: Split, max_len: int, batch_size: int, users: np.ndarray | None = None
) -> Iterator[EvalBatch]:
    """Batches of (history, target) for `split`, in user order."""
    users = np.arange(data.num_users) if users is None else users
    for start in range(0, len(users), batch_size):
        chunk = users[start : start + batch_size]
        pairs = [history_and_target(data, int(u), split) for u in chunk]
        inputs = left_pad([h for h, _ in pairs], max_len)
        yield EvalBatch(
            users=chunk,
            item_ids=torch.from_numpy(inputs),
            attention_mask=torch.from_numpy((inputs > 0).astype(np.int64)),
            targets=torch.tensor([t for _, t in pairs], dtype=torch.int64),
        )

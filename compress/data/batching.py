"""Left-padded batches for training (next item at every position) and evaluation (last item).

Leave-one-out split of a user sequence s: training uses s[:-2]; validation predicts s[-2]
from s[:-2]; test predicts s[-1] from s[:-1]. Inputs keep the most recent `max_len` items.

Training batches are only as wide as their longest window (the model anchors positions at
the first real item, so leading all-padding columns change nothing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Literal

import numpy as np
import torch

from compress.data.sequences import SequenceData
from compress.data.padding import left_pad

Split = Literal["valid", "test"]


@dataclass
class TrainBatch:
    item_ids: torch.Tensor  # [B, L] int64, left-padded with 0
    attention_mask: torch.Tensor  # [B, L] int64
    targets: torch.Tensor  # [B, L] int64, 0 where there is no target

    def to(self, device: torch.device) -> "TrainBatch":
        return TrainBatch(self.item_ids.to(device), self.attention_mask.to(device), self.targets.to(device))


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


def training_windows(data: SequenceData, max_len: int, sliding: bool = False) -> np.ndarray:
    """[N, 2] (user, stop): the window of training items s[:-2][stop - max_len - 1 : stop].

    Without `sliding` a user has one window, the most recent; with it, a history longer than
    max_len is cut into consecutive windows stepping back max_len items from the end (each
    window's first item is the previous one's last input), so every training pair is used once
    per epoch; windows with fewer than two items are dropped.
    """
    users = trainable_users(data)
    ends = data.lengths[users] - 2
    if not sliding:
        return np.stack([users, ends], axis=1)
    counts = np.maximum(1, -(-(ends - 1) // max_len))  # ceil((pairs) / max_len)
    rows = np.repeat(np.arange(len(users)), counts)
    steps = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    stops = ends[rows] - steps * max_len
    keep = stops >= 2
    return np.stack([users[rows][keep], stops[keep]], axis=1)


def train_batches(
    data: SequenceData,
    max_len: int,
    batch_size: int,
    generator: np.random.Generator,
    part: Callable[[np.ndarray], np.ndarray] | None = None,
    sliding: bool = False,
) -> Iterator[TrainBatch]:
    """One shuffled epoch over the training windows (`training_windows`): inputs
    window[:-1], targets window[1:], each batch as wide as its longest window.

    `part` keeps one process's share of each batch (data-parallel training).
    """
    windows = training_windows(data, max_len, sliding)
    windows = windows[generator.permutation(len(windows))]
    for start in range(0, len(windows), batch_size):
        chunk = windows[start : start + batch_size]
        if part:
            chunk = chunk[part(np.arange(len(chunk)))]
        rows = [data.sequence(int(u))[: int(stop)][-(max_len + 1) :] for u, stop in chunk]
        width = max(len(w) - 1 for w in rows)
        inputs = left_pad([w[:-1] for w in rows], width)
        targets = left_pad([w[1:] for w in rows], width)
        yield TrainBatch(
            item_ids=torch.from_numpy(inputs),
            attention_mask=torch.from_numpy((inputs > 0).astype(np.int64)),
            targets=torch.from_numpy(targets),
        )


def eval_batches(
    data: SequenceData, split: Split, max_len: int, batch_size: int, users: np.ndarray | None = None,
    trim: bool = False,
) -> Iterator[EvalBatch]:
    """Batches of (history, target) for `split`, in user order; `trim` makes each batch only as
    wide as its longest history (up to max_len) instead of max_len."""
    users = np.arange(data.num_users) if users is None else users
    for start in range(0, len(users), batch_size):
        chunk = users[start : start + batch_size]
        pairs = [history_and_target(data, int(u), split) for u in chunk]
        width = min(max_len, max(max(len(h) for h, _ in pairs), 1)) if trim else max_len
        inputs = left_pad([h for h, _ in pairs], width)
        yield EvalBatch(
            users=chunk,
            item_ids=torch.from_numpy(inputs),
            attention_mask=torch.from_numpy((inputs > 0).astype(np.int64)),
            targets=torch.tensor([t for _, t in pairs], dtype=torch.int64),
        )

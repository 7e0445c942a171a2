"""Ranking evaluation: full ranking over all items by default, HR/NDCG/MRR@K.

For a target at 0-based rank r (number of candidates scored above it; ties count against
the target, so a constant scorer gets no credit):
    hr@K   = 1[r < K]
    ndcg@K = 1[r < K] / log2(r + 2)        (one relevant item, so IDCG = 1)
    mrr@K  = 1[r < K] / (r + 1)
History items other than the target are removed from the candidates (`mask_history`).
Full ranking scores the catalogue `item_chunk` items at a time and adds up, chunk by chunk,
the candidates scoring at least the target, so memory holds [batch_size, item_chunk] scores
however large the catalogue. The ranks do not depend on the chunk size, except that BLAS may
round a dot product differently for another matrix width (about 1e-7 relative), which can
only reorder items whose scores agree to that precision.
The SLMRec paper's protocol (the target against `num_negatives` uniformly sampled unseen
items, with a fixed seed) is available as `protocol: sampled`, never the default.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from compress.data.batching import EvalBatch, Split, eval_batches, history_and_target
from compress.data.sequences import SequenceData
from compress.evaluation.config import EvalConfig
from compress.evaluation.scoring import ScoreFn, onnx_scores, torch_scores

if TYPE_CHECKING:
    from compress.serve.onnx_model import OnnxRecommender

ChunkScores = Callable[[int, int], torch.Tensor]  # (start, stop) -> [B, stop - start] scores of items start..stop-1


def metrics_from_ranks(ranks: np.ndarray, ks: list[int]) -> dict[str, float]:
    """HR/NDCG/MRR@K averaged over users from 0-based target ranks."""
    ranks = np.asarray(ranks, dtype=np.float64)
    out: dict[str, float] = {}
    for k in ks:
        hit = ranks < k
        out[f"hr@{k}"] = float(hit.mean())
        out[f"ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 2), 0.0).mean())
        out[f"mrr@{k}"] = float(np.where(hit, 1.0 / (ranks + 1), 0.0).mean())
    return out


def target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based rank of each row's target; ties with other items count against it."""
    target_scores = scores.gather(1, targets[:, None])
    at_least = (scores >= target_scores).sum(dim=1)
    return at_least - 1  # minus the target itself


def chunked_ranks(
    chunk_scores: ChunkScores,
    target_scores: torch.Tensor,
    targets: torch.Tensor,
    histories: list[np.ndarray] | None,
    num_items: int,
    chunk: int,
) -> torch.Tensor:
    """0-based rank of each row's target: how many candidates score at least `target_scores`.

    Candidates are the items 1..num_items other than the row's target and (with `histories`)
    its history items; they are scored `chunk` items at a time and the counts added up.
    """
    device = target_scores.device
    targets = targets.to(device)
    rows, cols = _history_index(histories, device)
    threshold = target_scores[:, None]
    counts = torch.zeros(len(targets), dtype=torch.int64, device=device)
    for start in range(0, num_items + 1, chunk):
        stop = min(start + chunk, num_items + 1)
        at_least = chunk_scores(start, stop) >= threshold
        if start == 0:
            at_least[:, 0] = False  # padding
        inside = (cols >= start) & (cols < stop)
        at_least[rows[inside], cols[inside] - start] = False
        own = torch.nonzero((targets >= start) & (targets < stop)).squeeze(1)
        at_least[own, targets[own] - start] = False  # the target itself
        counts += at_least.sum(dim=1)
    return counts


def _history_index(histories: list[np.ndarray] | None, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, item) index pairs of every history item (none without histories)."""
    if not histories:
        empty = torch.zeros(0, dtype=torch.int64, device=device)
        return empty, empty
    rows = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
    items = np.concatenate(histories).astype(np.int64)
    return torch.from_numpy(rows).to(device), torch.from_numpy(items).to(device)


def mask_history_items(scores: torch.Tensor, histories: list[np.ndarray], targets: torch.Tensor) -> torch.Tensor:
    """Set every history item's score to -inf (the whole history, not only the model's window),
    leaving each row's target as it is."""
    scores = scores.clone()
    keep_target = scores.gather(1, targets[:, None])
    rows = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
    scores[torch.from_numpy(rows), torch.from_numpy(np.concatenate(histories))] = float("-inf")
    scores.scatter_(1, targets[:, None], keep_target)
    return scores


def evaluate_scores(
    score_fn: ScoreFn, data: SequenceData, split: Split, config: EvalConfig, max_len: int
) -> dict[str, float]:
    """Run `score_fn` over every user of `split` and return averaged metrics."""
    users = evaluation_users(data, config)
    metrics = metrics_from_ranks(score_ranks(score_fn, data, split, config, max_len, users), config.ks)
    metrics["users"] = int(len(users))
    return metrics


def score_ranks(
    score_fn: ScoreFn, data: SequenceData, split: Split, config: EvalConfig, max_len: int, users: np.ndarray
) -> np.ndarray:
    """0-based target ranks of `users` (in order) under `score_fn`, by the protocol of `config`."""
    rng = np.random.default_rng(config.seed)
    ranks: list[np.ndarray] = []
    for batch in eval_batches(data, split, max_len, config.batch_size, users):
        scores = score_fn(batch).float().cpu()
        scores[:, 0] = float("-inf")
        histories = _histories(data, batch, split, config)
        if config.protocol == "sampled":
            if histories:
                scores = mask_history_items(scores, histories, batch.targets)
            scores = _sampled_candidates(scores, batch, data, rng, config.num_negatives)
            ranks.append(target_ranks(scores, torch.zeros(len(scores), dtype=torch.int64)).numpy())
        else:
            target_scores = scores.gather(1, batch.targets[:, None]).squeeze(1)
            ranks.append(chunked_ranks(
                lambda start, stop: scores[:, start:stop], target_scores, batch.targets, histories,
                data.num_items, config.item_chunk,
            ).numpy())
    return np.concatenate(ranks)


def evaluation_users(data: SequenceData, config: EvalConfig) -> np.ndarray:
    """The users an evaluation covers: all, or the first `max_users`."""
    return np.arange(data.num_users if config.max_users is None else min(config.max_users, data.num_users))


def _histories(data: SequenceData, batch: EvalBatch, split: Split, config: EvalConfig) -> list[np.ndarray] | None:
    if not config.mask_history:
        return None
    return [history_and_target(data, int(u), split)[0] for u in batch.users]


def _sampled_candidates(
    scores: torch.Tensor, batch: EvalBatch, data: SequenceData, rng: np.random.Generator, count: int
) -> torch.Tensor:
    """[B, 1 + count] scores: the target first, then `count` unseen sampled items."""
    rows = []
    for row, history, target in zip(scores, batch.item_ids.numpy(), batch.targets.numpy()):
        seen = set(history[history > 0].tolist()) | {int(target)}
        negatives: list[int] = []
        while len(negatives) < count:
            draw = rng.integers(1, data.num_items + 1, size=count)
            negatives.extend(int(i) for i in draw if int(i) not in seen)
            if len(seen) >= data.num_items:
                break
        candidates = torch.tensor([int(target)] + negatives[:count])
        rows.append(row[candidates])
    return torch.stack(rows)


@torch.no_grad()
def evaluate_model(
    model: torch.nn.Module, data: SequenceData, split: Split, config: EvalConfig, device: torch.device
) -> dict[str, float]:
    """Metrics of a SequentialRecommender on `split`: full ranking in item chunks, or sampled."""
    was_training = model.training
    model.eval()
    try:
        if config.protocol == "sampled":  # picks candidates out of the whole row of scores
            return evaluate_scores(torch_scores(model, device), data, split, config, model.config.max_len)
        users = evaluation_users(data, config)
        metrics = metrics_from_ranks(model_ranks(model, data, split, config, device, users), config.ks)
        return {**metrics, "users": int(len(users))}
    finally:
        model.train(was_training)


@torch.no_grad()
def model_ranks(
    model: torch.nn.Module, data: SequenceData, split: Split, config: EvalConfig, device: torch.device,
    users: np.ndarray,
) -> np.ndarray:
    """Full-ranking 0-based target ranks of `users` (in order), the catalogue scored in chunks
    (`model` in eval mode).

    The target's score is its dot product with the user state, rounded to the dtype the
    chunks are scored in, so it compares with the other items as their scores do.
    """
    order = np.argsort(data.lengths[users], kind="stable")  # similar lengths per batch, trimmed
    ranks = [np.zeros(0, dtype=np.int64)]
    for batch in eval_batches(data, split, model.config.max_len, config.batch_size, users[order], trim=True):
        states = model.last_states(batch.item_ids.to(device), batch.attention_mask.to(device))
        targets = batch.targets.to(device)
        exact = (states.float() * model.item_table[targets].float()).sum(-1)
        target_scores = exact.to(states.dtype).float()
        ranks.append(chunked_ranks(
            lambda start, stop: model.score(states, start, stop).float(), target_scores, batch.targets,
            _histories(data, batch, split, config), data.num_items, config.item_chunk,
        ).cpu().numpy())
    in_order = np.empty(len(users), dtype=np.int64)
    in_order[order] = np.concatenate(ranks)
    return in_order


@torch.no_grad()
def top_k_items(
    model: torch.nn.Module, item_ids: torch.Tensor, attention_mask: torch.Tensor, k: int, item_chunk: int = 8192
) -> tuple[torch.Tensor, torch.Tensor]:
    """([B, k] scores, [B, k] internal item ids), best first, items of the input left out (as in
    the exported graph); the catalogue is scored `item_chunk` items at a time, each chunk's top-k
    merged into the running top-k, so memory holds [B, item_chunk + k] scores."""
    states = model.last_states(item_ids, attention_mask)
    best_scores = states.new_empty((len(states), 0))
    best_ids = torch.zeros((len(states), 0), dtype=torch.int64, device=states.device)
    for start in range(0, model.config.num_items + 1, item_chunk):
        stop = min(start + item_chunk, model.config.num_items + 1)
        scores = model.score(states, start, stop)
        rows, cols = torch.nonzero((item_ids >= start) & (item_ids < stop), as_tuple=True)
        scores[rows, item_ids[rows, cols] - start] = float("-inf")
        top = scores.topk(min(k, stop - start), dim=1)
        merged_scores = torch.cat([best_scores, top.values], dim=1)
        merged_ids = torch.cat([best_ids, top.indices + start], dim=1)
        keep = merged_scores.topk(min(k, merged_scores.shape[1]), dim=1)
        best_scores, best_ids = keep.values, merged_ids.gather(1, keep.indices)
    return best_scores, best_ids


def evaluate_onnx(model: OnnxRecommender, data: SequenceData, split: Split, config: EvalConfig) -> dict[str, float]:
    """Metrics of an ONNX artifact (onnxruntime scores every item of every batch)."""
    return evaluate_scores(onnx_scores(model), data, split, config, model.max_len)


def popularity_scores(data: SequenceData, split: Split) -> torch.Tensor:
    """Item interaction counts over what is known before `split`'s targets."""
    drop = 2 if split == "valid" else 1
    known = np.concatenate([data.sequence(u)[:-drop] for u in range(data.num_users)])
    return torch.from_numpy(np.bincount(known, minlength=data.num_items + 1).astype(np.float32))


def evaluate_popularity(data: SequenceData, split: Split, config: EvalConfig, max_len: int) -> dict[str, float]:
    counts = popularity_scores(data, split)
    return evaluate_scores(lambda batch: counts.repeat(len(batch.targets), 1), data, split, config, max_len)

"""Ranking parity between a reference model and a converted one (exported, quantized).

On the first `users` test users, both score every item (history masked as in evaluation):
    overlap@K   = mean over users of |topK(reference) ∩ topK(candidate)| / K
    ndcg_drop@K = NDCG@K(reference) - NDCG@K(candidate)   (positive: the candidate is worse)
A stage fails with a ParityError (and leaves `parity.json`) when a threshold is missed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from compress.runs.artifacts import write_json
from compress.data.batching import EvalBatch, eval_batches, history_and_target
from compress.data.sequences import SequenceData
from compress.errors import ParityError
from compress.evaluation.metrics import ScoreFn, mask_history_items, metrics_from_ranks, target_ranks
from compress.serve.onnx_model import OnnxRecommender

PARITY_FILE = "parity.json"


class ParityConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    users: int = Field(512, ge=1, description="Held-out (test) users compared.")
    k: int = Field(10, ge=1, description="Cut-off of the top-K overlap and NDCG.")
    min_overlap: float = Field(0.99, ge=0, le=1, description="Fail below this mean top-K overlap.")
    max_ndcg_drop: float = Field(0.01, ge=0, description="Fail when NDCG@K drops by more than this.")


def ranking_parity(
    reference: ScoreFn, candidate: ScoreFn, data: SequenceData, max_len: int, config: ParityConfig
) -> dict[str, float]:
    """Top-K overlap and NDCG@K of `candidate` against `reference` on the first test users."""
    users = np.arange(min(config.users, data.num_users))
    overlaps, ranks_ref, ranks_cand = [], [], []
    for batch in eval_batches(data, "test", max_len, 256, users):
        histories = [history_and_target(data, int(u), "test")[0] for u in batch.users]
        ref, cand = (mask_history_items(_finite(fn(batch)), histories, batch.targets) for fn in (reference, candidate))
        top_ref, top_cand = ref.topk(config.k).indices.numpy(), cand.topk(config.k).indices.numpy()
        overlaps += [len(np.intersect1d(a, b)) / config.k for a, b in zip(top_ref, top_cand)]
        ranks_ref.append(target_ranks(ref, batch.targets).numpy())
        ranks_cand.append(target_ranks(cand, batch.targets).numpy())
    ndcg = f"ndcg@{config.k}"
    ref_ndcg = metrics_from_ranks(np.concatenate(ranks_ref), [config.k])[ndcg]
    cand_ndcg = metrics_from_ranks(np.concatenate(ranks_cand), [config.k])[ndcg]
    return {
        "users": int(len(users)),
        f"overlap@{config.k}": float(np.mean(overlaps)),
        f"reference_{ndcg}": ref_ndcg,
        f"candidate_{ndcg}": cand_ndcg,
        f"ndcg_drop@{config.k}": ref_ndcg - cand_ndcg,
    }


def check_parity(report: dict[str, float], config: ParityConfig, folder: Path, what: str) -> None:
    """Write `parity.json` into `folder`; raise a ParityError naming the missed threshold."""
    overlap, drop = report[f"overlap@{config.k}"], report[f"ndcg_drop@{config.k}"]
    passed = overlap >= config.min_overlap and drop <= config.max_ndcg_drop
    write_json(Path(folder) / PARITY_FILE, {**report, "thresholds": config.model_dump(), "passed": passed})
    if not passed:
        raise ParityError(
            f"{what} failed the ranking parity gate on {report['users']} test users: "
            f"top-{config.k} overlap {overlap:.3f} (min {config.min_overlap}), "
            f"NDCG@{config.k} drop {drop:+.4f} (max {config.max_ndcg_drop}); report in {Path(folder) / PARITY_FILE}",
            "choose a safer mode (e.g. dynamic int8, or static on MatMul only), or relax parity.min_overlap / "
            "parity.max_ndcg_drop in the recipe if the loss is acceptable",
        )


def torch_scores(model: torch.nn.Module) -> ScoreFn:
    """A score function over eval batches for a PyTorch model (on its own device)."""
    device = next(model.parameters()).device

    @torch.no_grad()
    def score(batch: EvalBatch) -> torch.Tensor:
        ids, mask = batch.item_ids.to(device), batch.attention_mask.to(device)
        return model.score(model.last_states(ids, mask)).float().cpu()

    return score


def onnx_scores(model: OnnxRecommender) -> ScoreFn:
    """A score function over eval batches for an ONNX artifact."""
    return lambda batch: torch.from_numpy(model.scores(batch.item_ids.numpy(), batch.attention_mask.numpy()))


def _finite(scores: torch.Tensor) -> torch.Tensor:
    """Float scores with -inf in place of NaN, so a broken model ranks nothing instead of crashing."""
    scores = scores.float().cpu().clone()
    scores[:, 0] = float("-inf")
    return torch.nan_to_num(scores, nan=float("-inf"))

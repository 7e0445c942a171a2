"""Ranking parity between a reference model and a converted one (exported, quantized).

On the first `users` test users, both score every item (history masked as in evaluation):
    overlap@K   = mean over users of |topK(reference) ∩ topK(candidate)| / K
    ndcg_drop@K = NDCG@K(reference) - NDCG@K(candidate)   (positive: the candidate is worse)
An ONNX artifact is checked under every engine of `parity.engines` (onnxruntime, OpenVINO).
A stage fails with a ParityError (and leaves `parity.json`) when a threshold is missed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from compress.runs.files import write_json
from compress.data.batching import eval_batches, history_and_target
from compress.data.sequences import SequenceData
from compress.errors import ParityError
from compress.evaluation.config import ParityConfig
from compress.evaluation.metrics import mask_history_items, metrics_from_ranks, target_ranks
from compress.evaluation.scoring import ScoreFn, onnx_scores

PARITY_FILE = "parity.json"


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


def onnx_parity(
    reference: ScoreFn, folder: Path, data: SequenceData, max_len: int, config: ParityConfig
) -> dict[str, Any]:
    """ranking_parity of the ONNX artifact in `folder` run by each engine of `config.engines`: the first
    engine's report, and with several engines every one's under `engines` (check_parity checks each)."""
    from compress.serve.onnx_model import load_recommender

    reports = {engine: ranking_parity(reference, onnx_scores(load_recommender(folder, engine, "cpu")), data,
                                      max_len, config) for engine in config.engines}
    first = reports[config.engines[0]]
    return {**first, "engines": reports} if len(reports) > 1 else first


def check_parity(report: dict[str, Any], config: ParityConfig, folder: Path, what: str) -> None:
    """Write `parity.json` into `folder`; raise a ParityError naming the missed threshold (and the engine,
    when several were checked)."""
    reports = report.get("engines") or {"": report}
    missed = {engine: r for engine, r in reports.items()
              if r[f"overlap@{config.k}"] < config.min_overlap or r[f"ndcg_drop@{config.k}"] > config.max_ndcg_drop}
    write_json(Path(folder) / PARITY_FILE, {**report, "thresholds": config.model_dump(), "passed": not missed})
    if missed:
        engine, report = next(iter(missed.items()))
        overlap, drop = report[f"overlap@{config.k}"], report[f"ndcg_drop@{config.k}"]
        where = f" under {engine}" if engine else ""
        raise ParityError(
            f"{what} failed the ranking parity gate{where} on {report['users']} test users: "
            f"top-{config.k} overlap {overlap:.3f} (min {config.min_overlap}), "
            f"NDCG@{config.k} drop {drop:+.4f} (max {config.max_ndcg_drop}); report in {Path(folder) / PARITY_FILE}",
            "choose a safer mode (e.g. dynamic int8, or static on MatMul only), or relax parity.min_overlap / "
            "parity.max_ndcg_drop in the recipe if the loss is acceptable",
        )


def _finite(scores: torch.Tensor) -> torch.Tensor:
    """Float scores with -inf in place of NaN, so a broken model ranks nothing instead of crashing."""
    scores = scores.float().cpu().clone()
    scores[:, 0] = float("-inf")
    return torch.nan_to_num(scores, nan=float("-inf"))

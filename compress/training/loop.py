"""The one training loop, shared by every stage that trains; a stage passes its own loss.

AdamW, linear warm-up then cosine decay, gradient clipping, early stopping on validation
NDCG@10 (the best weights are restored at the end), bf16 autocast on CUDA, and a checkpoint
after every epoch that holds everything needed to resume exactly where it stopped.

Under torchrun (see compress/runtime/distributed.py) the same loop is data parallel: every rank draws
the same shuffled order of users, takes every world_size-th user of each batch (`batch_size`
stays the global batch, so steps per epoch and the LR schedule do not depend on the number of
processes), and steps a DistributedDataParallel wrapper of the model; validation users are
split across ranks and their ranks gathered, so every rank sees the same metrics and stops at
the same epoch. Rank 0 alone writes the checkpoint, which holds the unwrapped model and no
per-rank state, so a run resumes under any world size.
"""

from __future__ import annotations

import copy
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from rich.progress import (
    BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
)

from compress.runtime import distributed
from compress.runs.files import atomic_write
from compress.data.batching import TrainBatch, train_batches, training_windows
from compress.data.sequences import SequenceData
from compress.evaluation.metrics import EvalConfig, evaluate_model, evaluation_users, metrics_from_ranks, model_ranks
from compress.models import SequentialRecommender
from compress.training.config import OptimConfig
from compress.training.losses import LossFn

SELECTION_METRIC = "ndcg@10"


@dataclass
class TrainContext:
    device: torch.device
    seed: int
    max_len: int
    eval_config: EvalConfig
    checkpoint: Path
    log: Callable[[str], None] = print
    show_progress: bool = True


@dataclass
class TrainResult:
    best_metric: float
    best_epoch: int
    epochs_run: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


def fit(
    model: SequentialRecommender, loss_fn: LossFn, data: SequenceData, config: OptimConfig, ctx: TrainContext
) -> TrainResult:
    """Train `model` in place with `loss_fn`; keep and restore the best validation weights."""
    model.to(ctx.device).train()
    windows = training_windows(data, ctx.max_len, config.sliding_windows)
    steps_per_epoch = math.ceil(len(windows) / config.batch_size)
    if config.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, config.max_steps_per_epoch)
    total_steps = steps_per_epoch * config.epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(total_steps, config.warmup_ratio))
    state = _LoopState(rng=np.random.default_rng(ctx.seed))
    _seed_everything(ctx.seed)
    if ctx.checkpoint.is_file():
        _resume(ctx.checkpoint, model, optimizer, scheduler, state, ctx.device)
        ctx.log(f"resumed from {ctx.checkpoint} after epoch {state.epoch}")
    step_loss = distributed.wrap(_StepLoss(model, loss_fn), ctx.device)
    eval_config = validation_config(ctx.eval_config, config)
    started = time.perf_counter() - state.seconds
    autocast = ctx.device.type == "cuda"
    shown = ctx.show_progress and distributed.is_main()

    with _progress(shown) as progress:
        task = progress.add_task("training", total=total_steps, completed=state.epoch * steps_per_epoch, info="")
        while state.epoch < config.epochs and not state.stopped:
            losses: list[torch.Tensor] = []  # detached, on the device: read once per epoch (per step if shown)
            batches = train_batches(
                data, ctx.max_len, config.batch_size, state.rng,
                part=distributed.batch_part, sliding=config.sliding_windows,
            )
            for step, batch in enumerate(batches):
                if step >= steps_per_epoch:
                    break
                batch = batch.to(ctx.device)
                with torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=autocast):
                    loss, _terms = step_loss(batch.item_ids, batch.attention_mask, batch.targets)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                scheduler.step()
                losses.append(loss.detach())
                info = f"epoch {state.epoch + 1} loss {_mean(losses[-50:]):.4f}" if shown else ""
                progress.update(task, advance=1, info=info)
            state.epoch += 1
            metrics = validate(model, data, eval_config, ctx.device)
            model.train()
            record = {"epoch": state.epoch, "loss": distributed.mean(_mean(losses)), **_pick(metrics)}
            state.history.append(record)
            _track_best(model, metrics[SELECTION_METRIC], state, config.patience)
            state.seconds = time.perf_counter() - started
            ctx.log(
                f"epoch {state.epoch}/{config.epochs}  loss {record['loss']:.4f}  "
                f"valid ndcg@10 {record['ndcg@10']:.4f}  hr@10 {record['hr@10']:.4f}"
                + ("  (best)" if state.best_epoch == state.epoch else "")
                + f"  {_clock(state.seconds)} elapsed, eta {_clock(_eta(state, config.epochs))}"
            )
            if distributed.is_main():
                _save_checkpoint(ctx.checkpoint, model, optimizer, scheduler, state)

    if state.best_state is not None:
        model.load_state_dict(state.best_state)
    model.eval()
    return TrainResult(state.best_metric, state.best_epoch, state.epoch, time.perf_counter() - started, state.history)


class _StepLoss(torch.nn.Module):
    """The loss of one batch as a module's forward, so DistributedDataParallel can wrap it
    (its gradient hooks are armed in forward); the teacher a loss closes over stays unwrapped."""

    def __init__(self, model: SequentialRecommender, loss_fn: LossFn) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, item_ids, attention_mask, targets) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.loss_fn(self.model, TrainBatch(item_ids, attention_mask, targets))


def validate(model: SequentialRecommender, data: SequenceData, config: EvalConfig, device: torch.device) -> dict:
    """Validation metrics; under torchrun each rank ranks its share of the users and all get the whole."""
    if not distributed.active():
        return evaluate_model(model, data, "valid", config, device)
    users = evaluation_users(data, config)
    model.eval()  # fit sets train mode again
    mine = model_ranks(model, data, "valid", config, device, distributed.strided(users))
    ranks = distributed.gather_in_order(mine, len(users))
    return {**metrics_from_ranks(ranks, config.ks), "users": int(len(users))}


def validation_config(eval_config: EvalConfig, config: OptimConfig) -> EvalConfig:
    """What `fit` validates on: full ranking over the first `config.eval_users` users (all by default)."""
    return eval_config.model_copy(update={"max_users": config.eval_users, "protocol": "full"})


@dataclass
class _LoopState:
    rng: np.random.Generator
    epoch: int = 0
    best_metric: float = -1.0
    best_epoch: int = 0
    bad_evals: int = 0
    stopped: bool = False
    seconds: float = 0.0
    best_state: dict[str, torch.Tensor] | None = None
    history: list[dict[str, float]] = field(default_factory=list)


def _track_best(model: torch.nn.Module, metric: float, state: _LoopState, patience: int) -> None:
    if metric > state.best_metric:
        state.best_metric, state.best_epoch, state.bad_evals = metric, state.epoch, 0
        state.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
    else:
        state.bad_evals += 1
        state.stopped = patience > 0 and state.bad_evals >= patience


def _warmup_cosine(total_steps: int, warmup_ratio: float) -> Callable[[int], float]:
    warmup = max(1, int(total_steps * warmup_ratio))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def _eta(state: _LoopState, epochs: int) -> float:
    """Seconds left if the remaining epochs run at the mean pace so far (early stopping may end sooner)."""
    return state.seconds / max(1, state.epoch) * (epochs - state.epoch)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _mean(losses: list[torch.Tensor]) -> float:
    """Mean of per-step losses (one device sync); NaN for none, as np.mean."""
    return torch.stack(losses).double().mean().item() if losses else float("nan")


def _pick(metrics: dict[str, float]) -> dict[str, float]:
    return {k: metrics[k] for k in ("ndcg@10", "hr@10") if k in metrics}


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        disable=not enabled,
        transient=False,
    )


def _save_checkpoint(path: Path, model, optimizer, scheduler, state: _LoopState) -> None:
    payload = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "loop": {k: v for k, v in vars(state).items() if k != "rng"},
        "batch_rng": state.rng.bit_generator.state,
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def _resume(path: Path, model, optimizer, scheduler, state: _LoopState, device: torch.device) -> None:
    payload = torch.load(path, map_location=device, weights_only=False)
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    for key, value in payload["loop"].items():
        setattr(state, key, value)
    state.rng.bit_generator.state = payload["batch_rng"]
    torch.set_rng_state(payload["torch_rng"].cpu())
    if payload["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(payload["cuda_rng"])

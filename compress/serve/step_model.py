"""Run the exported step model (`onnx/step.onnx`) with onnxruntime alone: per-user state in, state out.

A user's `StepState` holds, per layer, the keys and values (RoPE applied) of the positions the
model has seen, the item ids of the window (the last max_len items, never recommended back) and
the RoPE position of the next item. `OnnxStepModel.advance` appends new items for a batch of
users of different lengths (caches left-padded to the longest, masked) and returns the top-K,
the scores and every user's new state. Torch-free: numpy and onnxruntime only.

Overflow (`fit_window`): the model was trained on at most max_len positions. When an item would
make the cache longer, the oldest cached position is dropped ("slide") and positions keep
counting, so relative distances stay below max_len (RoPE only sees relative distances). The
deeper layers' cached keys then still carry context from the dropped items, unlike a full
recompute over the window; with `refresh_every = k > 0`, every k-th overflowing event instead
re-prefills the window from scratch (exactly a full recompute, at a full pass's cost).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compress.errors import ArtifactError
from compress.serve.onnx_model import import_onnxruntime, providers_for, read_metadata
from compress.serve.padding import left_pad

STEP_FILE = "step.onnx"


@dataclass
class StepState:
    """One user's cached state (see the module doc)."""

    kv: np.ndarray  # [2 x layers (key, value per layer), kv_heads, positions, head_dim], float32
    items: np.ndarray  # the window: last max_len item ids (int64), oldest first
    position: int = 0  # RoPE position of the next item
    overflowed: int = 0  # events since the cache first filled (drives refresh_every)

    @property
    def length(self) -> int:
        return int(self.kv.shape[2])

    @property
    def nbytes(self) -> int:
        return int(self.kv.nbytes + self.items.nbytes + 16)


@dataclass
class StepOutput:
    top_scores: np.ndarray  # [B, K]
    top_ids: np.ndarray  # [B, K] internal ids
    scores: np.ndarray  # [B, num_items + 1]
    states: list[StepState]


class OnnxStepModel:
    """The step graph of an ONNX artifact folder, served by onnxruntime."""

    def __init__(self, folder: Path, device: str = "auto", threads: int | None = None) -> None:
        self.folder = Path(folder)
        self.metadata = read_metadata(self.folder)
        step = self.metadata.get("step")
        if not step or not (self.folder / STEP_FILE).is_file():
            raise ArtifactError(
                f"{self.folder} has no step model ({STEP_FILE})",
                "export with `incremental: true` in the export stage (or `compress export --incremental`)",
            )
        self.step = step
        self.max_len: int = int(self.metadata["max_len"])
        self.top_k: int = int(self.metadata["top_k"])
        self.num_layers: int = int(step["num_layers"])
        self.kv_shape = (int(step["num_kv_heads"]), int(step["head_dim"]))
        ort = import_onnxruntime()
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.folder / STEP_FILE), options,
                                                providers=providers_for(device))
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ArtifactError(f"onnxruntime cannot load {self.folder / STEP_FILE}: {exc}") from None
        self.past_names = [f"past.{i}.{kind}" for i in range(self.num_layers) for kind in ("key", "value")]
        self.output_names = ["top_scores", "top_ids", "scores"] + [
            f"present.{i}.{kind}" for i in range(self.num_layers) for kind in ("key", "value")
        ]

    def empty_state(self) -> StepState:
        heads, dim = self.kv_shape
        return StepState(np.zeros((len(self.past_names), heads, 0, dim), np.float32), np.zeros(0, np.int64))

    def advance(self, states: list[StepState], new_items: list[np.ndarray]) -> StepOutput:
        """Append `new_items[b]` (internal ids, at least one) to `states[b]`; the caller keeps the cache
        within max_len (see `fit_window`). Inputs are not modified."""
        batch = self.batch(states, new_items)
        outputs = self.session.run(self.output_names, batch.feeds)
        top_scores, top_ids, scores, present = outputs[0], outputs[1], outputs[2], outputs[3:]
        past, total = batch.past, present[0].shape[2]
        new_states = []
        for b, (state, items) in enumerate(zip(states, batch.news)):
            n, t = int(batch.lengths[b]), len(items)
            kept = np.empty((len(present), *present[0].shape[1:2], n + t, present[0].shape[3]), np.float32)
            for i, p in enumerate(present):
                if total - t == past:  # no padding between the cache and the new items: one slice
                    kept[i] = p[b, :, past - n :]
                else:
                    kept[i, :, :n], kept[i, :, n:] = p[b, :, past - n : past], p[b, :, total - t :]
            new_states.append(StepState(kept, batch.windows[b], state.position + t, state.overflowed))
        return StepOutput(top_scores, top_ids, scores, new_states)

    def batch(self, states: list[StepState], new_items: list[np.ndarray]) -> "StepBatch":
        """The step graph's inputs for a batch (the benchmark also times the graph alone on them)."""
        news = [np.asarray(items, dtype=np.int64).ravel() for items in new_items]
        counts = np.array([len(items) for items in news])
        if not counts.all():
            raise ValueError("every user needs at least one new item")
        lengths = np.array([s.length for s in states])
        past, new = int(lengths.max()), int(counts.max())
        slots = np.arange(past + new)
        mask = (((slots >= past - lengths[:, None]) & (slots < past)) | (slots >= past + new - counts[:, None]))
        offsets = np.arange(new) - (new - counts[:, None])  # 0..t-1 on a row's real new slots, negative on padding
        starts = np.array([s.position for s in states])
        positions = np.where(offsets >= 0, starts[:, None] + offsets, 0)
        heads, dim = self.kv_shape
        kv = np.zeros((len(self.past_names), len(states), heads, past, dim), np.float32)
        for b, state in enumerate(states):
            if lengths[b]:
                kv[:, b, :, past - lengths[b] :] = state.kv
        windows = [np.concatenate([s.items, items])[-self.max_len :] for s, items in zip(states, news)]
        feeds = {
            "item_ids": np.stack(news) if new == counts.min() else left_pad(news, new),
            "attention_mask": mask.astype(np.int64),
            "position_ids": positions.astype(np.int64),
            "exclude_ids": left_pad(windows, max(len(w) for w in windows)),
            **dict(zip(self.past_names, kv)),
        }
        return StepBatch(feeds, lengths, past, news, windows)


@dataclass
class StepBatch:
    feeds: dict[str, np.ndarray]
    lengths: np.ndarray  # cached positions per user
    past: int  # the batch's cache length (the longest)
    news: list[np.ndarray]
    windows: list[np.ndarray]  # each user's window after the new items


def fit_window(state: StepState, item: int, max_len: int, refresh_every: int = 0) -> tuple[StepState, np.ndarray]:
    """The state to advance and the items to feed so that the cache stays within max_len positions
    (the overflow policy of the module doc): (state, [item]) while the history fits; slide (drop the
    oldest position) when it does not; every `refresh_every`-th overflowing event, re-prefill the window."""
    if state.length < max_len:
        return state, np.array([item], np.int64)
    overflowed = state.overflowed + 1
    if refresh_every and overflowed % refresh_every == 0:
        window = np.concatenate([state.items, [item]])[-max_len:].astype(np.int64)
        return StepState(state.kv[:, :, :0], np.zeros(0, np.int64), 0, overflowed), window
    drop = state.length - max_len + 1
    return StepState(state.kv[:, :, drop:], state.items, state.position, overflowed), np.array([item], np.int64)


def state_bytes(model: OnnxStepModel, positions: int, dtype: Any = np.float32) -> int:
    """Bytes of the keys/values of `positions` cached positions."""
    heads, dim = model.kv_shape
    return 2 * model.num_layers * heads * positions * dim * np.dtype(dtype).itemsize

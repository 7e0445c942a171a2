"""Run the exported step model (`onnx/step.onnx`) with onnxruntime alone, over per-user state kept in place.

Each user's state lives in a slot of a `KVStore` (compress/serve/kv_store.py): per layer the keys and
values (RoPE applied) of the positions seen, the window's item ids (never recommended back), the
RoPE position of the next item. `OnnxStepModel.advance(store, slots, new_items)` appends new items
for a batch of users of different lengths: it gathers the slots' cached positions into the graph's
`past` inputs (whole slots, masked past each row's length), runs the graph, and writes back only the new
positions (the graph's `new.{i}.key/value` outputs) and counters; nothing else is copied per user.
Torch-free: numpy and onnxruntime only.

Overflow (`next_items`): the model was trained on at most max_len positions. When an item arrives
with max_len positions cached, it overwrites the oldest one ("slide": the slot is a ring buffer)
and positions keep counting, so relative distances stay below max_len (RoPE only sees relative
distances). The deeper layers' cached keys then still carry context from the dropped items, unlike
a full recompute over the window; with `refresh_every = k > 0`, every k-th overflowing event
instead re-prefills the window from an empty slot (exactly a full recompute, at a full pass's cost).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compress.errors import ArtifactError
from compress.serve.kv_store import KVStore
from compress.serve.onnx_model import import_onnxruntime, providers_for, read_metadata
from compress.data.padding import left_pad

STEP_FILE = "step.onnx"


@dataclass
class StepOutput:
    top_scores: np.ndarray  # [B, K]
    top_ids: np.ndarray  # [B, K] internal ids
    scores: np.ndarray | None  # [B, num_items + 1] when asked for (advance(..., scores=True))


@dataclass
class StepBatch:
    """The graph's inputs for a batch of slots, and where its new positions go."""

    feeds: dict[str, np.ndarray]
    slots: np.ndarray  # [B]
    counts: np.ndarray  # [B] new items per row
    rows: np.ndarray  # [N] row of each new position (N = counts.sum())
    cols: np.ndarray  # [N] its new-slot index in the graph (item_ids column)
    targets: np.ndarray  # [N] its index in the slot's ring
    items: np.ndarray  # [N] its item id


OVERFLOW_POLICIES = {
    "exact": "past max_len, the last max_len items are re-prefilled when the window slides: every answer "
             "equals the full pass over the last max_len events (one prefill of max_len positions per event)",
    "slide": "past max_len, the oldest cached position is overwritten (one position of work per event); "
             "deeper layers keep context of dropped items, so answers differ slightly from the full pass",
}
DEFAULT_OVERFLOW = "exact"  # what an export states in metadata.json and what serving applies unless told otherwise


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
        self.overflow: str = step.get("overflow", DEFAULT_OVERFLOW)  # the policy the export states
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
        self.new_names = [f"new.{i}.{kind}" for i in range(self.num_layers) for kind in ("key", "value")]
        self.run_names = ["top_scores", "top_ids", *self.new_names]  # the outputs `advance` reads
        outputs = {o.name for o in self.session.get_outputs()}
        if not outputs.issuperset([*self.run_names, "scores"]):
            raise ArtifactError(f"{self.folder / STEP_FILE} has no `new.*` outputs (exported by an older version)",
                                "re-export the stage with `incremental: true`")

    def new_store(self, capacity: int = 64, dtype: Any = np.float32) -> KVStore:
        """An empty state store shaped for this model."""
        heads, dim = self.kv_shape
        return KVStore(self.num_layers, heads, dim, self.max_len, capacity, dtype)

    def advance(self, store: KVStore, slots: Any, new_items: list[np.ndarray], scores: bool = False) -> StepOutput:
        """Append `new_items[b]` (internal ids, at least one) to slot `slots[b]` (distinct slots): the top-K
        after them (and every item's score with `scores=True`: a [B, num_items + 1] copy out of the graph
        that serving does not need); the slots then hold the new positions. Several items per row must fit
        in max_len; a single item arriving at a full slot overwrites its oldest position (see `next_items`)."""
        batch = self.prepare(store, slots, new_items)
        names = [*self.run_names, "scores"] if scores else self.run_names
        outputs = self.session.run(names, batch.feeds)
        self.commit(store, batch, outputs[2 : 2 + len(self.new_names)])
        return StepOutput(outputs[0], outputs[1], outputs[-1] if scores else None)

    def prepare(self, store: KVStore, slots: Any, new_items: list[np.ndarray]) -> StepBatch:
        """The graph's inputs for a batch (no change to the store; the benchmark also times the graph on them)."""
        slots = np.asarray(slots, dtype=np.int64).ravel()
        news = [np.asarray(items, dtype=np.int64).ravel() for items in new_items]
        counts = np.array([len(items) for items in news], dtype=np.int64)
        if len(news) != len(slots) or not counts.all():
            raise ValueError("every slot needs at least one new item")
        if len(np.unique(slots)) != len(slots):
            raise ValueError("a slot appears twice in one call: apply a user's events one call after another")
        lengths, writes, max_len = store.length[slots], store.write[slots], self.max_len
        wraps = lengths + counts > max_len
        if (wraps & (counts > 1)).any():
            raise ValueError(f"several new items past max_len {max_len}: feed them one at a time (or from an empty slot)")
        # the cached positions the batch needs: the slots' whole width (max_len) once one has wrapped (its
        # oldest position may sit anywhere), else the longest row's length (positions fill 0, 1, ... in
        # order), masked past each row's length; 0 for a batch of prefills into empty slots, which then
        # attend to their own positions alone (what makes a cold user's prefill cheap)
        past, new = (max_len if lengths.max() >= max_len else int(lengths.max())), int(counts.max())
        offsets = np.arange(new) - (new - counts[:, None])  # 0..t-1 on a row's real new items, negative on padding
        real = offsets >= 0
        rows, cols = np.nonzero(real)
        targets = (writes[rows] + offsets[rows, cols]) % max_len
        item_ids = np.stack(news) if new == counts.min() else left_pad(news, new)
        mask = np.empty((len(slots), past + new), np.int64)
        mask[:, :past] = np.arange(past) < lengths[:, None]
        mask[wraps, writes[wraps]] = 0  # the oldest position, about to be overwritten
        mask[:, past:] = real
        positions = np.where(real, store.position[slots][:, None] + offsets, 0)
        exclude = store.items[slots]  # the window after the new items (a copy)
        exclude[rows, targets] = item_ids[rows, cols]
        feeds = {
            "item_ids": item_ids,
            "attention_mask": mask,
            "position_ids": positions,
            "exclude_ids": exclude,
            # arrays of their own: onnxruntime reads views into a larger array measurably slower
            **{name: np.ascontiguousarray(store.kv[i][slots, :, :past]) for i, name in enumerate(self.past_names)},
        }
        if store.dtype != np.float32:
            feeds |= {name: feeds[name].astype(np.float32) for name in self.past_names}
        return StepBatch(feeds, slots, counts, rows, cols, targets, item_ids[rows, cols])

    def commit(self, store: KVStore, batch: StepBatch, new_kv: list[np.ndarray]) -> None:
        """Write the graph's new positions (`new.{i}.key/value`, [B, kv_heads, T, head_dim]) into the slots."""
        at = batch.slots[batch.rows]
        for i, values in enumerate(new_kv):
            store.kv[i][at, :, batch.targets] = values[batch.rows, :, batch.cols]
        store.items[at, batch.targets] = batch.items
        slots, counts = batch.slots, batch.counts
        store.length[slots] = np.minimum(store.length[slots] + counts, self.max_len)
        store.position[slots] += counts
        store.write[slots] = (store.write[slots] + counts) % self.max_len


def next_items(store: KVStore, slot: int, item: int, refresh_every: int = 0) -> np.ndarray:
    """The items to feed `advance` for one event under the overflow policy (module doc): [item] while the
    history fits, and when it slides (`advance` overwrites the oldest position); every `refresh_every`-th
    overflowing event, the window (the last max_len items) after emptying the slot."""
    if store.length[slot] < store.max_len:
        return np.array([item], np.int64)
    store.overflowed[slot] += 1
    if refresh_every and store.overflowed[slot] % refresh_every == 0:
        window = np.append(store.window(slot), item)[-store.max_len :]
        store.clear(slot, keep_overflow=True)
        return window
    return np.array([item], np.int64)

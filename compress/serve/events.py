"""Stateful scoring for `compress serve` (POST /events): each event appends one item to its user's window
and returns the user's new top-K, through the step model (step.onnx) over a per-replica KV cache.

State is split in two:
- durable: the user's window (last max_len original item ids), a sequence number and the applied
  event ids, in a `StateStore` (compress/serve/state_store.py: in-process, or Redis shared by replicas);
- an accelerator: the keys/values of the window's positions in this replica's `KVStore` slot
  (compress/serve/kv_store.py), valid while its sequence number equals the store's. On a miss (a user
  new to this replica, evicted from its cache, or moved on by another replica) the slot is rebuilt from
  the window by one prefill in the same onnxruntime call as the other users' steps.

An event is applied by compare-and-set on the sequence number, together with its id: a repeated id
(a client retrying after a timeout or after a replica died) is not applied again; its answer is the
user's current top-K with `duplicate: true`. A lost race (another replica applied an event of the same
user in between) invalidates the slot and retries the event.

Overflow past max_len (`OVERFLOW_POLICIES`): `exact` (the default) re-prefills the last max_len items
when the window slides, so every answer equals the full pass over the last max_len events and the
KV cache is a function of the window alone (what makes replicas and recovery agree exactly); `slide`
overwrites the oldest cached position (one position of work, close to but not equal to the full
pass; compress/serve/step_model.py).
Torch-free: numpy and onnxruntime only.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from compress.serve.kv_store import SlotLRU
from compress.serve.requests import Event, RequestError
from compress.serve.state_store import APPLIED, Commit, StateStore
from compress.serve.step_model import OVERFLOW_POLICIES, OnnxStepModel

MAX_RETRIES = 8  # lost compare-and-set races before an event is answered with an error


@dataclass
class EventOutcome:
    user: str
    item: str
    id: str | None
    items: list[Any] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    state: str = "hit"  # hit: cached slot; new: first event of the user; rebuilt: slot prefilled from the window
    window: int = 0  # items in the user's window after the event (at most max_len)
    duplicate: bool = False  # the id was applied before: nothing changed, the current top-K
    error: str | None = None


class EventEngine:
    """Events in, per-user top-K out (see the module doc)."""

    def __init__(self, folder: Path, store: StateStore, cache_users: int = 100_000, overflow: str | None = None,
                 device: str = "cpu", threads: int | None = None) -> None:
        """`overflow` None: the policy the artifact's metadata states."""
        if overflow is not None and overflow not in OVERFLOW_POLICIES:
            raise ValueError(f"overflow policy {overflow!r}: expected one of {sorted(OVERFLOW_POLICIES)}")
        if cache_users < 1:
            raise ValueError("cache_users must be at least 1")
        self.model = OnnxStepModel(folder, device, threads)
        self.folder, self.store, self.overflow = Path(folder), store, overflow or self.model.overflow
        self.max_len, self.top_k = self.model.max_len, self.model.top_k
        self.kv = self.model.new_store(min(cache_users, 256))
        self.slots = SlotLRU(self.kv, cache_users)
        self.cached_seq: dict[str, int] = {}  # user -> the store's sequence number its slot holds
        self.original: list[Any] = self.model.metadata["item_ids"]
        self.lookup = {str(original): internal for internal, original in enumerate(self.original, start=1)}
        self.counts: Counter[str] = Counter()  # hit, new, rebuilt, duplicate, conflict

    @property
    def cache_capacity(self) -> int:
        return self.slots.max_users

    @property
    def evictions(self) -> int:
        return self.slots.evictions

    def check(self, events: list[Event]) -> None:
        """A RequestError (422) naming every event whose item is unknown: a request is refused whole,
        before any state changes."""
        bad = [f"events[{i}].item {e.item!r}" for i, e in enumerate(events) if e.item not in self.lookup]
        if bad:
            more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
            raise RequestError(422, "unknown_item", f"unknown item id(s): {', '.join(bad[:5])}{more}; nothing was "
                                                    "applied (ids are the original item ids of the training data)")

    def apply(self, events: list[Event]) -> list[EventOutcome]:
        """Apply events in order (a user's events one after another); one outcome per event. Items must be
        known (`check`)."""
        outcomes: list[EventOutcome | None] = [None] * len(events)
        retries: Counter[int] = Counter()
        pending = list(range(len(events)))
        while pending:
            wave, later, seen = [], [], set()
            for index in pending:  # one event per user per wave, at most the cache's capacity of users
                user = events[index].user
                (later if user in seen or len(wave) == self.cache_capacity else wave).append(index)
                seen.add(user)
            for index in self._wave(events, wave, outcomes):
                retries[index] += 1
                if retries[index] > MAX_RETRIES:
                    e = events[index]
                    outcomes[index] = EventOutcome(e.user, e.item, e.id, error="conflict: other replicas kept "
                                                   "changing this user's state; retry the event")
                else:
                    later.append(index)
            pending = sorted(later)
        return outcomes  # type: ignore[return-value]

    def _wave(self, events: list[Event], wave: list[int], outcomes: list[EventOutcome | None]) -> list[int]:
        """Apply one event per user; the indices to retry (lost races)."""
        batch = [events[i] for i in wave]
        states = self.store.load([e.user for e in batch], [e.id for e in batch])
        todo, slots, feeds, kinds = [], [], [], []
        for index, event, state in zip(wave, batch, states):
            if state.seen:
                self.counts["duplicate"] += 1
                recs = state.recs or {"items": [], "scores": []}
                outcomes[index] = EventOutcome(event.user, event.item, event.id, recs["items"], recs["scores"],
                                               "hit", len(state.window), duplicate=True)
                continue
            slot, new = self.slots.get(event.user)
            internal = self.lookup[event.item]
            window = [*state.window, event.item][-self.max_len :]
            length = int(self.kv.length[slot])
            if not new and self.cached_seq.get(event.user) == state.seq and length == min(len(state.window), self.max_len):
                kind = "hit"
                if length == self.max_len and self.overflow == "exact":
                    self.kv.clear(slot)
                    feed = self._internal(window)
                else:  # appended, or (slide) written over the oldest position
                    feed = np.array([internal], np.int64)
            else:
                kind = "new" if state.seq == 0 else "rebuilt"
                self.kv.clear(slot)
                feed = self._internal(window)
            self.cached_seq.pop(event.user, None)  # valid again only once the commit is applied
            todo.append((index, event, state, window))
            slots.append(slot)
            feeds.append(feed)
            kinds.append(kind)
        if not todo:
            return []
        top_scores, top_ids = self._advance(slots, feeds)
        commits = []
        for row, (index, event, state, window) in enumerate(todo):
            recs = {"items": [self.original[int(i) - 1] for i in top_ids[row]],
                    "scores": [float(s) for s in top_scores[row]]}
            commits.append(Commit(event.user, state.seq, window, recs, event.id))
        retry = []
        for (index, event, state, window), commit, kind, result in zip(todo, commits, kinds,
                                                                       self.store.commit(commits)):
            if result == APPLIED:
                self.cached_seq[event.user] = state.seq + 1
                self.counts[kind] += 1
                outcomes[index] = EventOutcome(event.user, event.item, event.id, commit.recs["items"],
                                               commit.recs["scores"], kind, len(window))
            else:  # stale or a duplicate that raced in: reload and try again (the slot is rebuilt)
                self.counts["conflict"] += 1
                retry.append(index)
        return retry

    def _internal(self, window: list[str]) -> np.ndarray:
        """Internal ids of a window (items unknown to this artifact, e.g. written by another model, left out)."""
        ids = [self.lookup[i] for i in window if i in self.lookup]
        return np.array(ids or [0], np.int64)

    def _advance(self, slots: list[int], feeds: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """One onnxruntime call for the single-item steps, one for the prefills (a prefill would otherwise
        widen every row of the batch to its length)."""
        top_scores = np.empty((len(slots), self.top_k), np.float32)
        top_ids = np.empty((len(slots), self.top_k), np.int64)
        single = [i for i, f in enumerate(feeds) if len(f) == 1]
        several = [i for i, f in enumerate(feeds) if len(f) > 1]
        for rows in (single, several):
            if rows:
                out = self.model.advance(self.kv, [slots[i] for i in rows], [feeds[i] for i in rows])
                top_scores[rows], top_ids[rows] = out.top_scores, out.top_ids
        return top_scores, top_ids

    def stats(self) -> dict[str, Any]:
        return {"cached_users": len(self.slots), "cache_capacity": self.cache_capacity, "evictions": self.evictions,
                "state_store": self.store.kind, "overflow": self.overflow, **self.counts}

"""Stateful scoring for `compress serve` (POST /events): each event appends one item to its user's window
and returns the user's new top-K, through the step model (step.onnx) over a per-replica KV cache.

State is split in two:
- durable: the user's window (last max_len original item ids), a sequence number and the applied
  event ids, in a `StateStore` (compress/serve/state_store.py: in-process, or Redis shared by replicas;
  a wave of events is one load and one commit round trip);
- an accelerator: the keys/values of the window's positions in this replica's `KVStore` slot
  (compress/serve/kv_store.py), valid while its sequence number equals the store's. On a miss (a user
  new to this replica, evicted from its cache, or moved on by another replica) the slot is rebuilt from
  the window by a prefill, in one onnxruntime call with the wave's other prefills.

An event is applied by compare-and-set on the sequence number, together with its id: a repeated id
(a client retrying after a timeout or after a replica died) is not applied again; its answer is the
user's current top-K with `duplicate: true`. A lost race (another replica applied an event of the same
user in between) invalidates the slot and retries the event.

Overflow past max_len (`OVERFLOW_POLICIES`): `exact` (the default) answers every event of a user whose
window is full (max_len items, sliding) by the full pass over the window (model.onnx of the same export,
one onnxruntime call for the wave's full windows): the answer is the full pass over the last max_len
events by construction, a function of the window alone (what makes replicas and recovery agree exactly),
and such users take no cache slot (a cache would be rebuilt at every event). `slide` overwrites the
oldest cached position (one position of work, close to but not equal to the full pass;
compress/serve/step_model.py).
The engine counts wall seconds in the state store and the model (`seconds`), exported as metrics.
Torch-free: numpy and onnxruntime only.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from compress.serve.kv_store import SlotLRU
from compress.serve.scoring import HistoryScorer
from compress.serve.requests import Event, RequestError
from compress.serve.state_store import APPLIED, Commit, StateStore
from compress.serve.step_model import OVERFLOW_POLICIES, OnnxStepModel

MAX_RETRIES = 8  # lost compare-and-set races before an event is answered with an error
CACHE_BYTES = 2 << 30  # KV cache per replica unless a number of users is given


@dataclass
class EventOutcome:
    user: str
    item: str
    id: str | None
    items: list[Any] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    state: str = "hit"  # hit: cached slot; new: first event of the user; rebuilt: slot prefilled from the window;
    # full: a full pass over the full window (exact overflow policy past max_len: nothing cached)
    window: int = 0  # items in the user's window after the event (at most max_len)
    duplicate: bool = False  # the id was applied before: nothing changed, the current top-K
    error: str | None = None


class EventEngine:
    """Events in, per-user top-K out (see the module doc)."""

    def __init__(self, folder: Path, store: StateStore, cache_users: int | None = None, overflow: str | None = None,
                 device: str = "cpu", threads: int | None = None, cache_bytes: int = CACHE_BYTES) -> None:
        """`overflow` None: the policy the artifact's metadata states. `cache_users` None: as many users as
        `cache_bytes` of KV cache hold (every slot holds max_len positions)."""
        if overflow is not None and overflow not in OVERFLOW_POLICIES:
            raise ValueError(f"overflow policy {overflow!r}: expected one of {sorted(OVERFLOW_POLICIES)}")
        if cache_users is not None and cache_users < 1:
            raise ValueError("cache_users must be at least 1")
        self.model = OnnxStepModel(folder, device, threads)
        self.full = HistoryScorer(folder, device, threads)  # the full pass (model.onnx of the same export)
        self.folder, self.store, self.overflow = Path(folder), store, overflow or self.model.overflow
        self.max_len, self.top_k = self.model.max_len, self.model.top_k
        probe = self.model.new_store(1)
        capacity = cache_users or max(1, cache_bytes // probe.slot_bytes)
        # every slot up front: numpy's zeros are pages the OS maps on first write, so memory grows with the
        # users cached, and no request waits for the cache to be copied into a larger one
        try:
            self.kv = self.model.new_store(capacity)
        except MemoryError:
            raise ValueError(f"a KV cache of {capacity:,} users needs {capacity * probe.slot_bytes / 2**30:.1f} GiB "
                             "(max_len positions each): lower the cache size") from None
        self.slots = SlotLRU(self.kv, capacity)
        self.cached_seq: dict[str, int] = {}  # user -> the store's sequence number its slot holds
        self.original: list[Any] = self.model.metadata["item_ids"]
        self.lookup = {str(original): internal for internal, original in enumerate(self.original, start=1)}
        self.counts: Counter[str] = Counter()  # hit, new, rebuilt, full, duplicate, conflict
        self.seconds: Counter[str] = Counter()  # wall seconds in the state store (load, commit) and the model

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
        started = time.perf_counter()
        states = self.store.load([e.user for e in batch], [e.id for e in batch])
        loaded = time.perf_counter()
        todo, slots, feeds, kinds = [], [], [], []
        for index, event, state in zip(wave, batch, states):
            if state.seen:
                self.counts["duplicate"] += 1
                recs = state.recs or {"items": [], "scores": []}
                outcomes[index] = EventOutcome(event.user, event.item, event.id, recs["items"], recs["scores"],
                                               "hit", len(state.window), duplicate=True)
                continue
            window = [*state.window, event.item][-self.max_len :]
            known = min(len(state.window), self.max_len)  # positions a valid slot holds
            slot = self.slots.peek(event.user)
            cached = slot is not None and self.cached_seq.get(event.user) == state.seq and self.kv.length[slot] == known
            self.cached_seq.pop(event.user, None)  # valid again only once the commit is applied
            if self.overflow == "exact" and len(window) == self.max_len and not (cached and known < self.max_len):
                # the window is full and slides from now on: every answer is a full pass over it, so a
                # cache would be rebuilt at every event; the slot goes back to the LRU
                self.slots.forget(event.user)
                kind, slot, feed = "full", -1, self._internal(window)
            elif cached:  # appended, or (slide) written over the oldest position
                kind, feed = "hit", np.array([self.lookup[event.item]], np.int64)
                self.slots.get(event.user)  # the most recent user now
            else:
                kind = "new" if state.seq == 0 else "rebuilt"
                slot, _ = self.slots.get(event.user)
                self.kv.clear(slot)
                feed = self._internal(window)
            todo.append((index, event, state, window))
            slots.append(slot)
            feeds.append(feed)
            kinds.append(kind)
        if not todo:
            return []
        top_scores, top_ids = self._advance(slots, feeds, kinds)
        modelled = time.perf_counter()
        commits = []
        for row, (index, event, state, window) in enumerate(todo):
            recs = {"items": [self.original[int(i) - 1] for i in top_ids[row]],
                    "scores": [float(s) for s in top_scores[row]]}
            commits.append(Commit(event.user, state.seq, window, recs, event.id))
        retry = []
        for (index, event, state, window), commit, kind, result in zip(todo, commits, kinds,
                                                                       self.store.commit(commits)):
            if result == APPLIED:
                if kind != "full":
                    self.cached_seq[event.user] = state.seq + 1
                self.counts[kind] += 1
                outcomes[index] = EventOutcome(event.user, event.item, event.id, commit.recs["items"],
                                               commit.recs["scores"], kind, len(window))
            else:  # stale or a duplicate that raced in: reload and try again (the slot is rebuilt)
                self.counts["conflict"] += 1
                retry.append(index)
        self.seconds["load"] += loaded - started
        self.seconds["model"] += modelled - loaded
        self.seconds["commit"] += time.perf_counter() - modelled
        return retry

    def _internal(self, window: list[str]) -> np.ndarray:
        """Internal ids of a window (items unknown to this artifact, e.g. written by another model, left out)."""
        lookup = self.lookup
        ids = [lookup[i] for i in window if i in lookup]
        return np.array(ids or [0], np.int64)

    def _advance(self, slots: list[int], feeds: list[np.ndarray], kinds: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """One onnxruntime call per kind of work: the single-item steps (a new user's first item among them),
        the prefills of several items into empty slots (a prefill would otherwise widen every row of the
        steps' batch to its length; alone, they attend to nothing cached) and the full passes over full
        windows (model.onnx)."""
        top_scores = np.empty((len(slots), self.top_k), np.float32)
        top_ids = np.empty((len(slots), self.top_k), np.int64)
        full = [i for i, kind in enumerate(kinds) if kind == "full"]
        single = [i for i, (kind, f) in enumerate(zip(kinds, feeds)) if kind != "full" and len(f) == 1]
        several = [i for i, (kind, f) in enumerate(zip(kinds, feeds)) if kind != "full" and len(f) > 1]
        for rows in (single, several):
            if rows:
                out = self.model.advance(self.kv, [slots[i] for i in rows], [feeds[i] for i in rows])
                top_scores[rows], top_ids[rows] = out.top_scores, out.top_ids
        if full:
            top_scores[full], top_ids[full] = self.full.score([feeds[i] for i in full], len(full))
        return top_scores, top_ids

    def stats(self) -> dict[str, Any]:
        return {"cached_users": len(self.slots), "cache_capacity": self.cache_capacity, "evictions": self.evictions,
                "state_store": self.store.kind, "overflow": self.overflow, **self.counts}

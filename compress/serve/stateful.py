"""Stateful serving: per-user KV state kept in memory across calls, top-K after every event.

`StatefulRecommender.observe(events)` takes (user, original item id) events in time order and
returns one `EventResult` per event: the top-K after that event (items of the user's window left
out), from the step model, one position of work per event. Events of different users are
batched into one onnxruntime call; a user's events are applied in order.

Documented behaviour (never a crash):
- unknown item id: the event is skipped (`error` says so), the user's state is unchanged;
- a user not in memory (new, or evicted by the LRU): starts from an empty state (`state: "new"`),
  i.e. an evicted user's earlier history is forgotten;
- memory: at most `max_users` users are kept; the least recently active is evicted first (its
  slot of the preallocated state store is reused, compress/serve/kv_store.py);
- history longer than max_len: the window policy of compress.serve.step_model.next_items.
Torch-free: numpy and onnxruntime only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from compress.serve.kv_store import SlotLRU
from compress.serve.step_model import OnnxStepModel, next_items


@dataclass
class EventResult:
    user: str
    item: str
    items: list[Any] = field(default_factory=list)  # top-K original ids, best first
    scores: list[float] = field(default_factory=list)
    state: str = "cached"  # "new": the user was not in memory (new or evicted)
    positions: int = 0  # cached positions after the event
    error: str | None = None


class StatefulRecommender:
    """Per-user step state in an LRU, over an ONNX artifact that has `step.onnx`."""

    def __init__(
        self,
        folder: Path,
        max_users: int = 100_000,
        refresh_every: int | None = None,
        top_k: int | None = None,
        device: str = "auto",
        threads: int | None = None,
    ) -> None:
        """`refresh_every` k past max_len: re-prefill the window every k events (1 = the `exact` policy,
        0 = `slide` only); None: the overflow policy the artifact states (exact unless told otherwise)."""
        if max_users < 1:
            raise ValueError("max_users must be at least 1")
        self.model = OnnxStepModel(folder, device, threads)
        if refresh_every is None:
            refresh_every = 1 if self.model.overflow == "exact" else 0
        self.max_users = max_users
        self.store = self.model.new_store(min(max_users, 256))
        self.users = SlotLRU(self.store, max_users)  # user -> slot
        self.refresh_every = refresh_every
        self.top_k = self.model.top_k if top_k is None else top_k  # 0 is refused below, not taken as K
        if not 1 <= self.top_k <= self.model.top_k:
            raise ValueError(f"top-k {self.top_k} is out of range: the artifact was exported with K = {self.model.top_k}")
        table = self.model.metadata["item_ids"]
        self.original = table
        self.lookup = {str(original): internal for internal, original in enumerate(table, start=1)}

    def observe(self, events: Iterable[tuple[Any, Any]]) -> list[EventResult]:
        """Apply events (user, original item id) in order; one result per event."""
        results = [EventResult(str(user), str(item)) for user, item in events]
        pending = list(range(len(results)))
        while pending:  # each wave holds at most one event per user, so a user's events stay in order
            wave, later, seen = [], [], set()
            for index in pending:  # at most max_users users per wave: none evicts another of its wave
                user = results[index].user
                (later if user in seen or len(wave) == self.max_users else wave).append(index)
                seen.add(user)
            self._apply(wave, results)
            pending = later
        return results

    def _apply(self, wave: list[int], results: list[EventResult]) -> None:
        batch, slots, feeds = [], [], []
        for index in wave:
            result = results[index]
            internal = self.lookup.get(result.item)
            if internal is None:
                result.error = f"unknown item id {result.item!r}: event skipped, state unchanged"
                continue
            slot, new = self.users.get(result.user)
            result.state = "new" if new else "cached"
            batch.append(index)
            slots.append(slot)
            feeds.append(next_items(self.store, slot, internal, self.refresh_every))
        if not batch:
            return
        output = self.model.advance(self.store, slots, feeds)
        for row, (index, slot) in enumerate(zip(batch, slots)):
            result = results[index]
            result.items = [self.original[int(i) - 1] for i in output.top_ids[row, : self.top_k]]
            result.scores = [float(s) for s in output.top_scores[row, : self.top_k]]
            result.positions = int(self.store.length[slot])

    @property
    def evictions(self) -> int:
        return self.users.evictions

    def forget(self, user: Any) -> bool:
        """Drop a user's state; whether it was in memory."""
        return self.users.forget(str(user))

    def stats(self) -> dict[str, Any]:
        """Users in memory, evictions, and state bytes per user (mean over users in memory; and at max_len)."""
        sizes = [self.store.state_bytes(slot) for slot in self.users.slots.values()]
        return {
            "users": len(self.users),
            "max_users": self.max_users,
            "evictions": self.evictions,
            "state_bytes_per_user_mean": float(np.mean(sizes)) if sizes else 0.0,
            "state_bytes_per_user_at_max_len": self.store.slot_bytes,
            "state_bytes_total": int(sum(sizes)),
            "state_bytes_reserved": self.store.capacity * self.store.slot_bytes,
        }


def parse_event(line: str) -> tuple[str, str]:
    """`user item` or `user item timestamp` (spaces, tabs or commas between; the timestamp is ignored,
    lines are taken in file order); a ValueError for anything else."""
    fields = line.replace(",", " ").split()
    if len(fields) not in (2, 3):
        raise ValueError(f"expected `user item`, got {line.strip()!r}")
    return fields[0], fields[1]


def event_records(server: StatefulRecommender, lines: Iterable[str], chunk_size: int = 256) -> Iterator[dict[str, Any]]:
    """One JSON-ready record per non-blank line, in line order, observed `chunk_size` lines at a time:
    the top-K after the event, or `error` (a malformed line or an unknown item; no state changes)."""
    chunk: list[tuple[int, str]] = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            chunk.append((number, line))
        if len(chunk) == chunk_size:
            yield from _chunk_records(server, chunk)
            chunk = []
    yield from _chunk_records(server, chunk)


def _chunk_records(server: StatefulRecommender, chunk: list[tuple[int, str]]) -> list[dict[str, Any]]:
    events, numbers, records = [], [], {}
    for number, line in chunk:
        try:
            events.append(parse_event(line))
            numbers.append(number)
        except ValueError as exc:
            records[number] = {"line": number, "error": f"malformed event: {exc}"}
    for number, result in zip(numbers, server.observe(events)):
        record: dict[str, Any] = {"line": number, "user": result.user, "item": result.item}
        if result.error:
            record["error"] = result.error
        else:
            record |= {"items": result.items, "scores": [round(s, 6) for s in result.scores],
                       "state": result.state, "positions": result.positions}
        records[number] = record
    return [records[number] for number in sorted(records)]


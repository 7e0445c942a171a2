"""Stateful serving: per-user KV state kept in memory across calls, top-K after every event.

`StatefulRecommender.observe(events)` takes (user, original item id) events in time order and
returns one `EventResult` per event: the top-K after that event (items of the user's window left
out), from the step model, one position of work per event. Events of different users are
batched into one onnxruntime call; a user's events are applied in order.

Documented behaviour (never a crash):
- unknown item id: the event is skipped (`error` says so), the user's state is unchanged;
- a user not in memory (new, or evicted by the LRU): starts from an empty state (`state: "new"`),
  i.e. an evicted user's earlier history is forgotten;
- memory: at most `max_users` users are kept; the least recently active is evicted first;
- history longer than max_len: the window policy of compress.serve.step_model.fit_window.
Torch-free: numpy and onnxruntime only.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from compress.serve.step_model import OnnxStepModel, StepState, fit_window


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
        refresh_every: int = 0,
        top_k: int | None = None,
        device: str = "auto",
        threads: int | None = None,
    ) -> None:
        if max_users < 1:
            raise ValueError("max_users must be at least 1")
        self.model = OnnxStepModel(folder, device, threads)
        self.max_users = max_users
        self.refresh_every = refresh_every
        self.top_k = top_k or self.model.top_k
        if not 1 <= self.top_k <= self.model.top_k:
            raise ValueError(f"top-k {self.top_k} is out of range: the artifact was exported with K = {self.model.top_k}")
        table = self.model.metadata["item_ids"]
        self.original = table
        self.lookup = {str(original): internal for internal, original in enumerate(table, start=1)}
        self.users: OrderedDict[str, StepState] = OrderedDict()
        self.evictions = 0

    def observe(self, events: Iterable[tuple[Any, Any]]) -> list[EventResult]:
        """Apply events (user, original item id) in order; one result per event."""
        results = [EventResult(str(user), str(item)) for user, item in events]
        pending = list(range(len(results)))
        while pending:  # each wave holds at most one event per user, so a user's events stay in order
            wave, later, seen = [], [], set()
            for index in pending:
                (later if results[index].user in seen else wave).append(index)
                seen.add(results[index].user)
            self._apply(wave, results)
            pending = later
        return results

    def _apply(self, wave: list[int], results: list[EventResult]) -> None:
        batch, states, feeds = [], [], []
        for index in wave:
            result = results[index]
            internal = self.lookup.get(result.item)
            if internal is None:
                result.error = f"unknown item id {result.item!r}: event skipped, state unchanged"
                continue
            state = self.users.get(result.user)
            if state is None:
                result.state = "new"
                state = self.model.empty_state()
            state, items = fit_window(state, internal, self.model.max_len, self.refresh_every)
            batch.append(index)
            states.append(state)
            feeds.append(items)
        if not batch:
            return
        output = self.model.advance(states, feeds)
        for row, index in enumerate(batch):
            result = results[index]
            result.items = [self.original[int(i) - 1] for i in output.top_ids[row, : self.top_k]]
            result.scores = [float(s) for s in output.top_scores[row, : self.top_k]]
            result.positions = output.states[row].length
            self._remember(result.user, output.states[row])

    def _remember(self, user: str, state: StepState) -> None:
        self.users[user] = state
        self.users.move_to_end(user)
        while len(self.users) > self.max_users:
            self.users.popitem(last=False)
            self.evictions += 1

    def forget(self, user: Any) -> bool:
        """Drop a user's state; whether it was in memory."""
        return self.users.pop(str(user), None) is not None

    def stats(self) -> dict[str, Any]:
        """Users in memory, evictions, and state bytes per user (mean over users in memory; and at max_len)."""
        sizes = [s.nbytes for s in self.users.values()]
        full = self.model.step["state_bytes_per_position"] * self.model.max_len + 8 * self.model.max_len + 16
        return {
            "users": len(self.users),
            "max_users": self.max_users,
            "evictions": self.evictions,
            "state_bytes_per_user_mean": float(np.mean(sizes)) if sizes else 0.0,
            "state_bytes_per_user_at_max_len": int(full),
            "state_bytes_total": int(sum(sizes)),
        }


def parse_event(line: str) -> tuple[str, str]:
    """`user item` or `user item timestamp` (spaces, tabs or commas between; the timestamp is ignored,
    lines are taken in file order); a ValueError for anything else."""
    fields = line.replace(",", " ").split()
    if len(fields) not in (2, 3):
        raise ValueError(f"expected `user item`, got {line.strip()!r}")
    return fields[0], fields[1]

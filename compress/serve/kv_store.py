"""Per-user step state kept in place: every user's cached keys/values in one preallocated array.

`KVStore` holds slots. Slot s has, per layer, a key and a value array [kv_heads, max_len, head_dim]
(all in one array [2 x layers, slots, kv_heads, max_len, head_dim], key then value per layer), the
item ids of the window at the same indices, the number of cached positions, the RoPE position of
the next item, the index the next position is written to, and the count of overflowing events.
A user's positions fill indices 0, 1, ... in order; once max_len are cached, each new position
overwrites the oldest one (a ring buffer). The step graph does not depend on the order of the
cached slots (RoPE is applied before caching, the mask says which slots are real), so this is the
"slide" overflow policy without moving any cached data. Serving a batch gathers the users' slots
into the graph's `past` inputs and writes back only the new positions (`OnnxStepModel.advance`).

`SlotLRU` maps users to slots, at most `max_users`; the least recently used user is evicted and
its slot cleared and reused. Storage grows (doubling) as users arrive, up to `max_users` slots.
Torch-free: numpy only.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Hashable, Iterator

import numpy as np

COUNTERS = ("length", "position", "write", "overflowed")


class KVStore:
    """Cached keys/values, windows and counters of `capacity` slots (see the module doc)."""

    def __init__(self, num_layers: int, kv_heads: int, head_dim: int, max_len: int, capacity: int = 64,
                 dtype: Any = np.float32) -> None:
        self.num_layers, self.kv_heads, self.head_dim, self.max_len = num_layers, kv_heads, head_dim, max_len
        self.dtype = np.dtype(dtype)
        self.kv = np.zeros((2 * num_layers, capacity, kv_heads, max_len, head_dim), self.dtype)
        self.items = np.zeros((capacity, max_len), np.int64)
        self.length = np.zeros(capacity, np.int64)  # cached positions (at most max_len)
        self.position = np.zeros(capacity, np.int64)  # RoPE position of the next item
        self.write = np.zeros(capacity, np.int64)  # index the next position goes to (the oldest, once full)
        self.overflowed = np.zeros(capacity, np.int64)  # events that arrived with the cache full

    @property
    def capacity(self) -> int:
        return int(self.kv.shape[1])

    def grow(self, capacity: int) -> None:
        """Make room for at least `capacity` slots (new slots are empty)."""
        if capacity <= self.capacity:
            return
        kv = np.zeros((self.kv.shape[0], capacity, *self.kv.shape[2:]), self.dtype)
        kv[:, : self.capacity] = self.kv
        self.kv = kv
        self.items = np.concatenate([self.items, np.zeros((capacity - len(self.items), self.max_len), np.int64)])
        for name in COUNTERS:
            old = getattr(self, name)
            setattr(self, name, np.concatenate([old, np.zeros(capacity - len(old), np.int64)]))

    def clear(self, slots: Any, keep_overflow: bool = False) -> None:
        """Empty `slots` (their cached keys need no zeroing: the mask hides positions past `length`)."""
        self.items[slots] = 0
        for name in COUNTERS[: 3 if keep_overflow else 4]:
            getattr(self, name)[slots] = 0

    def window(self, slot: int) -> np.ndarray:
        """The slot's cached item ids, oldest first."""
        n = int(self.length[slot])
        if n < self.max_len:
            return self.items[slot, :n].copy()
        return np.roll(self.items[slot], -int(self.write[slot]))

    @property
    def bytes_per_position(self) -> int:
        """Keys and values of one cached position, plus its item id."""
        return 2 * self.num_layers * self.kv_heads * self.head_dim * self.dtype.itemsize + 8

    def state_bytes(self, slot: int) -> int:
        """Bytes of the slot's cached positions and counters (what the user's state holds)."""
        return int(self.length[slot]) * self.bytes_per_position + 8 * len(COUNTERS)

    @property
    def slot_bytes(self) -> int:
        """Bytes reserved per slot (max_len positions and the counters)."""
        return self.max_len * self.bytes_per_position + 8 * len(COUNTERS)


class SlotLRU:
    """Users to slots of a KVStore, least recently used evicted past `max_users` (slot cleared, reused)."""

    def __init__(self, store: KVStore, max_users: int) -> None:
        if max_users < 1:
            raise ValueError("max_users must be at least 1")
        self.store, self.max_users = store, max_users
        self.slots: OrderedDict[Hashable, int] = OrderedDict()
        self.free: list[int] = []  # slots of forgotten users
        self.used = 0  # slots handed out so far: 0 .. used - 1
        self.evictions = 0

    def __contains__(self, user: Hashable) -> bool:
        return user in self.slots

    def __len__(self) -> int:
        return len(self.slots)

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self.slots)  # least recent first

    def get(self, user: Hashable) -> tuple[int, bool]:
        """The user's slot (now the most recent) and whether it is new (empty: the user was not in memory).
        Callers batching several users must take at most `max_users` of them at a time."""
        if user in self.slots:
            self.slots.move_to_end(user)
            return self.slots[user], False
        if len(self.slots) >= self.max_users:
            _, slot = self.slots.popitem(last=False)
            self.evictions += 1
        elif self.free:
            slot = self.free.pop()
        else:
            slot, self.used = self.used, self.used + 1
            if slot >= self.store.capacity:
                self.store.grow(min(self.max_users, max(2 * self.store.capacity, slot + 1)))
        self.store.clear(slot)
        self.slots[user] = slot
        return slot, True

    def peek(self, user: Hashable) -> int | None:
        """The user's slot, or None; the LRU order is left as it is."""
        return self.slots.get(user)

    def forget(self, user: Hashable) -> bool:
        """Drop a user (the slot is reused); whether it was in memory."""
        slot = self.slots.pop(user, None)
        if slot is None:
            return False
        self.store.clear(slot)
        self.free.append(slot)
        return True

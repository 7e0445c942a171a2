"""The durable per-user state of `compress serve`: each user's recent item window and applied event ids.

A user's state is `UserState`: the window (original item ids, oldest first, at most max_len), a
sequence number (events applied so far), the top-K after the last event (returned again for a
repeated event id) and, per event id, whether it was applied. The KV cache of a replica is not
state: it is rebuilt from the window by one prefill whenever its sequence number differs from the
store's (compress/serve/events.py).

- `MemoryStateStore`: one process (the default, no Redis): a dict, the least recently active user
  forgotten past `max_users`.
- `RedisStateStore`: Redis, shared by replicas. Per user a hash `<prefix>u:<user>` (fields `s`
  sequence, `w` window as JSON, `r` top-K as JSON) and a sorted set `<prefix>e:<user>` of the last
  `keep_ids` applied event ids scored by sequence number. `commit` is one Lua script: it applies
  the new state only if the sequence number is still the one read and the event id is not applied
  yet (compare-and-set), so two replicas never apply an event twice nor lose one.

Both load a batch of users in one round trip and commit a batch in one round trip.
Torch-free (redis-py is imported only by RedisStateStore).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Protocol

APPLIED, STALE, DUPLICATE = "applied", "stale", "duplicate"  # outcomes of a commit
KEEP_IDS = 100_000  # event ids remembered per user (idempotence window)


class StateStoreError(Exception):
    """The state store cannot be reached or answered wrongly (HTTP 503)."""


@dataclass
class UserState:
    window: list[str] = field(default_factory=list)  # original item ids, oldest first
    seq: int = 0  # events applied so far
    recs: dict[str, Any] | None = None  # {"items": [...], "scores": [...]} after the last event
    seen: bool = False  # whether the event id asked about at load time was already applied


@dataclass
class Commit:
    user: str
    expected_seq: int
    window: list[str]
    recs: dict[str, Any]
    event_id: str | None


class StateStore(Protocol):
    kind: str

    def load(self, users: list[str], event_ids: list[str | None]) -> list[UserState]: ...

    def commit(self, commits: list[Commit]) -> list[str]: ...

    def ping(self) -> bool: ...

    def close(self) -> None: ...


class MemoryStateStore:
    """In-process state (one replica): at most `max_users` users, the least recently active forgotten."""

    kind = "memory"

    def __init__(self, max_users: int = 1_000_000, keep_ids: int = KEEP_IDS) -> None:
        self.max_users, self.keep_ids = max_users, keep_ids
        self.users: OrderedDict[str, tuple[UserState, OrderedDict[str, int]]] = OrderedDict()
        self.evictions = 0

    def load(self, users: list[str], event_ids: list[str | None]) -> list[UserState]:
        states = []
        for user, event_id in zip(users, event_ids):
            state, ids = self.users.get(user, (UserState(), {}))
            states.append(UserState(list(state.window), state.seq, state.recs, event_id is not None and event_id in ids))
        return states

    def commit(self, commits: list[Commit]) -> list[str]:
        outcomes = []
        for c in commits:
            state, ids = self.users.get(c.user, (UserState(), OrderedDict()))
            if state.seq != c.expected_seq:
                outcomes.append(STALE)
                continue
            if c.event_id is not None and c.event_id in ids:
                outcomes.append(DUPLICATE)
                continue
            if c.event_id is not None:
                ids[c.event_id] = state.seq + 1
                while len(ids) > self.keep_ids:
                    ids.popitem(last=False)
            self.users[c.user] = (UserState(list(c.window), state.seq + 1, c.recs), ids)
            self.users.move_to_end(c.user)
            while len(self.users) > self.max_users:
                self.users.popitem(last=False)
                self.evictions += 1
            outcomes.append(APPLIED)
        return outcomes

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        pass


# KEYS: the user's hash, its event-id set; ARGV: expected seq, window JSON, top-K JSON, event id ('' none), keep
COMMIT_SCRIPT = """
local seq = tonumber(redis.call('HGET', KEYS[1], 's') or '0')
if seq ~= tonumber(ARGV[1]) then return -1 end
if ARGV[4] ~= '' and redis.call('ZSCORE', KEYS[2], ARGV[4]) then return -2 end
redis.call('HSET', KEYS[1], 's', seq + 1, 'w', ARGV[2], 'r', ARGV[3])
if ARGV[4] ~= '' then
  redis.call('ZADD', KEYS[2], seq + 1, ARGV[4])
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -tonumber(ARGV[5]) - 1)
end
return seq + 1
"""


class RedisStateStore:
    """State in Redis (see the module doc), shared by every replica pointed at the same server and prefix."""

    kind = "redis"

    def __init__(self, url: str, prefix: str = "compress:", keep_ids: int = KEEP_IDS, timeout_s: float = 5.0) -> None:
        try:
            import redis
        except ImportError:
            raise StateStoreError("redis-py is not installed: pip install 'compress[serve]'") from None
        self.url, self.prefix, self.keep_ids = url, prefix, keep_ids
        self._errors = (redis.RedisError, OSError)
        try:
            self.client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        except ValueError as exc:
            raise StateStoreError(f"bad Redis URL {url!r}: {exc}") from None
        self._commit = self.client.register_script(COMMIT_SCRIPT)

    def _keys(self, user: str) -> tuple[str, str]:
        return f"{self.prefix}u:{user}", f"{self.prefix}e:{user}"

    def load(self, users: list[str], event_ids: list[str | None]) -> list[UserState]:
        try:
            pipe = self.client.pipeline(transaction=False)
            for user, event_id in zip(users, event_ids):
                state_key, ids_key = self._keys(user)
                pipe.hmget(state_key, "s", "w", "r")
                pipe.zscore(ids_key, event_id if event_id is not None else "")
            replies = pipe.execute()
        except self._errors as exc:
            raise StateStoreError(f"Redis at {self.url}: {exc}") from None
        states = []
        for i, event_id in enumerate(event_ids):
            (seq, window, recs), score = replies[2 * i], replies[2 * i + 1]
            states.append(UserState(
                json.loads(window) if window else [], int(seq or 0), json.loads(recs) if recs else None,
                event_id is not None and score is not None,
            ))
        return states

    def commit(self, commits: list[Commit]) -> list[str]:
        try:
            pipe = self.client.pipeline(transaction=False)
            for c in commits:
                args = [c.expected_seq, json.dumps(c.window), json.dumps(c.recs), c.event_id or "", self.keep_ids]
                self._commit(keys=list(self._keys(c.user)), args=args, client=pipe)
            replies = pipe.execute()
        except self._errors as exc:
            raise StateStoreError(f"Redis at {self.url}: {exc}") from None
        return [APPLIED if r > 0 else STALE if r == -1 else DUPLICATE for r in replies]

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except self._errors:
            return False

    def close(self) -> None:
        self.client.close()


def open_store(redis_url: str | None, max_users: int = 1_000_000, prefix: str = "compress:") -> StateStore:
    """Redis when a URL is given, else the in-process store."""
    if redis_url:
        return RedisStateStore(redis_url, prefix)
    return MemoryStateStore(max_users)

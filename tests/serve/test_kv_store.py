"""The state store: slots grow on demand, the LRU evicts and reuses slots, the ring's window and sizes."""

import numpy as np
import pytest

from compress.serve.kv_store import KVStore, SlotLRU


def store(capacity=2, max_len=4):
    return KVStore(num_layers=2, kv_heads=1, head_dim=3, max_len=max_len, capacity=capacity)


def test_slots_grow_keeping_what_they_hold():
    kv = store(capacity=2)
    kv.kv[:, 1] = 7.0
    kv.length[1], kv.items[1, :2] = 2, [5, 6]
    kv.grow(5)
    assert kv.capacity == 5 and kv.kv.shape == (4, 5, 1, 4, 3) and len(kv.length) == len(kv.items) == 5
    assert (kv.kv[:, 1] == 7.0).all() and kv.length[1] == 2 and kv.window(1).tolist() == [5, 6]
    assert (kv.kv[:, 2:] == 0).all() and (kv.length[2:] == 0).all()


def test_lru_hands_out_slots_evicts_the_least_recent_and_reuses_its_slot_cleared():
    kv = store(capacity=1)
    lru = SlotLRU(kv, max_users=3)
    assert [lru.get(u) for u in "abc"] == [(0, True), (1, True), (2, True)] and kv.capacity == 3
    kv.length[0], kv.position[0], kv.items[0, 0], kv.overflowed[0] = 1, 9, 4, 2  # a's state
    assert lru.get("a") == (0, False) and list(lru) == ["b", "c", "a"]
    assert lru.get("d") == (1, True) and "b" not in lru and lru.evictions == 1  # b was the least recent
    assert lru.get("e") == (2, True) and lru.get("f") == (0, True) and lru.evictions == 3
    assert kv.length[0] == kv.position[0] == kv.overflowed[0] == 0 and kv.items[0].tolist() == [0] * 4
    assert lru.forget("d") and not lru.forget("d") and len(lru) == 2
    assert lru.get("g") == (1, True) and kv.capacity == 3  # the forgotten user's slot, no growth
    with pytest.raises(ValueError, match="max_users"):
        SlotLRU(kv, 0)


def test_window_in_age_order_once_the_ring_wraps_and_state_bytes():
    kv = store(max_len=4)
    kv.items[0], kv.length[0], kv.write[0] = [9, 10, 7, 8], 4, 2  # 7 was written first of those still cached
    assert kv.window(0).tolist() == [7, 8, 9, 10]
    kv.items[1, :3], kv.length[1], kv.write[1] = [1, 2, 3], 3, 3
    assert kv.window(1).tolist() == [1, 2, 3]
    per_position = 2 * 2 * 1 * 3 * 4 + 8  # key + value x 2 layers x 1 head x 3 dims x fp32, + the item id
    assert kv.bytes_per_position == per_position and kv.state_bytes(1) == 3 * per_position + 32
    assert kv.slot_bytes == 4 * per_position + 32
    kv.clear(0, keep_overflow=True)
    assert kv.length[0] == 0 and kv.window(0).tolist() == []
    half = KVStore(2, 1, 3, 4, dtype=np.float16)
    assert half.bytes_per_position == per_position // 2 + 4

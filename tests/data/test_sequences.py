import numpy as np
import pandas as pd
import pytest

from compress.data.batching import training_windows, eval_batches, history_and_target, left_pad, train_batches
from compress.data.sequences import build_sequences, kcore_filter
from compress.data.synthetic import SyntheticConfig, generate
from compress.errors import DataError


def test_remap_sorts_by_time_and_drops_short_users():
    table = pd.DataFrame(
        {
            "user": ["b", "b", "b", "a", "a", "a", "c"],
            "item": [30, 10, 20, 10, 40, 20, 10],
            "timestamp": [3, 1, 2, 5, 6, 4, 1],
        }
    )
    data = build_sequences(table)
    assert data.num_users == 2 and data.dropped_users == 1
    assert data.num_items == 4
    assert data.item_ids.tolist() == [10, 20, 30, 40]
    by_user = dict(zip(data.user_ids.tolist(), range(data.num_users)))
    assert data.item_ids[data.sequence(by_user["b"]) - 1].tolist() == [10, 20, 30]
    assert data.item_ids[data.sequence(by_user["a"]) - 1].tolist() == [20, 10, 40]


def test_equal_timestamps_keep_file_order():
    table = pd.DataFrame({"user": [1, 1, 1], "item": [3, 1, 2], "timestamp": [5, 5, 5]})
    assert build_sequences(table).sequence(0).tolist() == [3, 1, 2]


def test_kcore_is_iterative():
    # item 9 has 1 interaction; removing it leaves user 2 with 1, which must go too.
    table = pd.DataFrame({"user": [1, 1, 2, 2, 3, 3], "item": [1, 2, 1, 9, 1, 2]})
    kept = kcore_filter(table, 2)
    assert sorted(kept["user"].unique().tolist()) == [1, 3]
    assert sorted(kept["item"].unique().tolist()) == [1, 2]


def test_nothing_left_is_an_error():
    with pytest.raises(DataError, match="at least 3"):
        build_sequences(pd.DataFrame({"user": [1, 2], "item": [1, 2]}))


def test_leave_one_out_split():
    data = build_sequences(pd.DataFrame({"user": [1] * 5, "item": [1, 2, 3, 4, 5]}))
    history, target = history_and_target(data, 0, "valid")
    assert history.tolist() == [1, 2, 3] and target == 4
    history, target = history_and_target(data, 0, "test")
    assert history.tolist() == [1, 2, 3, 4] and target == 5


def test_train_batches_never_see_validation_or_test_items():
    data = build_sequences(pd.DataFrame({"user": [1] * 6, "item": [1, 2, 3, 4, 5, 6]}))
    (batch,) = list(train_batches(data, max_len=8, batch_size=4, generator=np.random.default_rng(0)))
    assert batch.item_ids[0].tolist() == [1, 2, 3]  # as wide as the longest window, not max_len
    assert batch.targets[0].tolist() == [2, 3, 4]
    assert batch.attention_mask[0].tolist() == [1, 1, 1]


def _pairs(batches) -> list[tuple[int, int]]:
    """Every (input, target) pair of an epoch, padding left out."""
    out = []
    for batch in batches:
        keep = batch.targets > 0
        out += list(zip(batch.item_ids[keep].tolist(), batch.targets[keep].tolist()))
    return sorted(out)


def test_sliding_windows_use_every_training_pair_once():
    items = list(range(1, 13))  # training part s[:-2] = 1..10: nine pairs
    data = build_sequences(pd.DataFrame({"user": [1] * 12 + [2] * 4, "item": items + [1, 2, 3, 4]}))
    last = _pairs(train_batches(data, 3, 8, np.random.default_rng(0)))
    every = _pairs(train_batches(data, 3, 8, np.random.default_rng(0), sliding=True))
    assert every == sorted([(i, i + 1) for i in range(1, 10)] + [(1, 2)])
    assert last == sorted([(7, 8), (8, 9), (9, 10), (1, 2)])  # the most recent window only
    assert training_windows(data, 3, sliding=True).tolist() == [[0, 10], [0, 7], [0, 4], [1, 2]]


def test_inputs_keep_the_most_recent_items():
    assert left_pad([np.array([1, 2, 3, 4, 5])], 3).tolist() == [[3, 4, 5]]
    data = build_sequences(pd.DataFrame({"user": [1] * 6, "item": [1, 2, 3, 4, 5, 6]}))
    (batch,) = list(eval_batches(data, "test", max_len=3, batch_size=8))
    assert batch.item_ids.tolist() == [[3, 4, 5]] and batch.targets.tolist() == [6]


def test_synthetic_is_seeded_and_sized():
    config = SyntheticConfig(users=50, items=40, clusters=4, min_len=5, max_len=10)
    first, again, other = generate(config, 1), generate(config, 1), generate(config, 2)
    assert first.equals(again) and not first.equals(other)
    assert first["user"].nunique() == 50
    lengths = first.groupby("user").size()
    assert lengths.min() >= 5 and lengths.max() <= 10
    assert not first.duplicated(["user", "item"]).any()


def test_fingerprint_and_stats(tiny_data):
    assert len(tiny_data.fingerprint()) == 16
    stats = tiny_data.stats()
    assert stats["users"] == tiny_data.num_users
    assert stats["interactions"] == int(tiny_data.lengths.sum())

"""compress bench's `incremental` key: the three modes at two batch sizes, padding share, state bytes."""

import numpy as np
import pytest
import torch

from compress.bench import incremental
from compress.bench.config import BenchConfig
from compress.bench.session import BenchSession
from compress.bench.incremental import MODES, ROW_COLUMNS, incremental_bench, incremental_rows
from compress.handlers import OnnxArtifact
from tests.conftest import STEP_MAX_LEN, TINY_BENCH

PER_POSITION = 2 * 2 * 1 * 8 * 4  # key+value x 2 layers x 1 kv head x head_dim 8 x fp32
COUNTER_BYTES = 8 * 4  # a slot's int64 counters: length, position, write, overflowed


def check_rates_agree_with_the_timings(entry: dict, batch: int) -> None:
    """Each mode's events/s is batch over its mean (and median) call time, per CPU second batch over the
    median CPU time; the step's speedups are its rates over each full pass's."""
    for mode in MODES:
        m = entry[mode]
        assert 0 < m["p50_ms"] <= m["p99_ms"] and m["mean_ms"] > 0 and m["cpu_p50_ms"] > 0, mode
        assert m["events_per_s"] == pytest.approx(batch * 1000 / m["mean_ms"]), mode
        assert m["events_per_s_median"] == pytest.approx(batch * 1000 / m["p50_ms"]), mode
        assert m["events_per_cpu_s"] == pytest.approx(batch * 1000 / m["cpu_p50_ms"]), mode
    step = entry["step"]
    for base in ("full_padded", "full_real"):
        for rate, suffix in (("events_per_s", ""), ("events_per_s_median", "_median"), ("events_per_cpu_s", "_cpu")):
            assert step[f"speedup_vs_{base}{suffix}"] == pytest.approx(step[rate] / entry[base][rate])


def test_a_step_artifact_gets_the_incremental_figures(tiny_step_onnx, tiny_data):
    _, folder = tiny_step_onnx
    session = BenchSession(BenchConfig(**TINY_BENCH, threads=1), torch.device("cpu"), tiny_data, STEP_MAX_LEN)
    result = session.measure(OnnxArtifact(folder))["incremental"]
    assert result["max_len"] == STEP_MAX_LEN and set(result) >= {"batch_1", "batch_8", "state_bytes_per_user"}
    lengths = np.array([min(len(h), STEP_MAX_LEN) for h in session.pool])
    assert result["requests"] == len(session.pool) and result["mean_history"] == pytest.approx(lengths.mean())
    for batch in (1, 8):
        entry = result[f"batch_{batch}"]
        assert set(entry) == set(MODES)
        check_rates_agree_with_the_timings(entry, batch)
        assert 0 <= entry["full_real"]["padding_share"] < 1 and 0 <= entry["full_padded"]["padding_share"] < 1
    # batch 1 at the history's own length pads nothing; padded to max_len, the share of the timed requests'
    # (the pool's first `iterations` after `warmup`) positions that are padding
    assert result["batch_1"]["full_real"]["padding_share"] == 0
    timed = lengths[TINY_BENCH["warmup"] : TINY_BENCH["warmup"] + TINY_BENCH["iterations"]]
    assert result["batch_1"]["full_padded"]["padding_share"] == pytest.approx(1 - timed.mean() / STEP_MAX_LEN)
    state = result["state_bytes_per_user"]
    assert state["per_position"] == PER_POSITION
    assert state["fp32_mean"] == pytest.approx(lengths.mean() * (PER_POSITION + 8) + COUNTER_BYTES)
    assert state["fp32_at_max_len"] == STEP_MAX_LEN * (PER_POSITION + 8) + COUNTER_BYTES
    rows = incremental_rows(result)
    assert len(rows) == 2 * len(MODES) and all(len(row) == len(ROW_COLUMNS) for row in rows)
    assert [(row[0], row[2]) for row in rows] == [(mode, str(b)) for b in (1, 8) for mode in MODES]


def test_known_histories_give_known_positions_and_padding(tiny_step_onnx, monkeypatch):
    """Eight histories of known lengths: what each mode feeds its graph, and the padding shares, by hand."""
    _, folder = tiny_step_onnx
    lengths = [2, 8, 3, 1, 7, 2, 6, 8]
    histories = [(np.arange(n) * 7 + i) % 60 + 1 for i, n in enumerate(lengths)]  # internal ids 1..60
    calls = []  # ("full", ids shape) for a full pass, ("step", new items per user) for a step

    class Full(incremental.OnnxRecommender):
        def topk(self, ids, mask):
            calls.append(("full", ids.shape))
            return super().topk(ids, mask)

    class Step(incremental.OnnxStepModel):
        def prepare(self, store, slots, new_items):
            calls.append(("step", [len(np.ravel(items)) for items in new_items]))
            return super().prepare(store, slots, new_items)

    monkeypatch.setattr(incremental, "OnnxRecommender", Full)
    monkeypatch.setattr(incremental, "OnnxStepModel", Step)
    result = incremental_bench(folder, histories, batch_sizes=(1, 4), warmup=1, iterations=8, batch_iterations=1,
                               threads=1)

    # the prefill caches every history but its last item (none for the one-item history), in one call
    assert calls[0] == ("step", [1, 7, 2, 6, 1, 5, 7])
    later = calls[1:]
    steps = [items for kind, items in later if kind == "step"]
    full = [shape for kind, shape in later if kind == "full"]
    # batch 1: 9 calls (1 warm-up + 8) per mode; batch 4: 2 calls (1 warm-up + 1). A step feeds one new
    # item per user (B positions), the padded full pass B x max_len, the real-length one B x its longest
    assert steps == [[1]] * (2 * 9) + [[1] * 4] * (2 * 2)  # the step graph's feeds, then the timed step calls
    assert full[:9] == [(1, STEP_MAX_LEN)] * 9
    assert full[9:18] == [(1, lengths[i % 8]) for i in range(9)]
    assert full[18:20] == [(4, STEP_MAX_LEN)] * 2
    assert sorted(full[20:22]) == [(4, 3), (4, 8)]  # length buckets: the 4 shortest (1,2,2,3), the 4 longest
    assert all(sum(items) < shape[0] * shape[1] for items, shape in zip(steps[18:], full[18:20]))

    # padding: batch 1 times users 1..7, 0 (all 37 positions of 8 x 8); batch 4 times users 4..7 (23 of 32)
    assert result["batch_1"]["full_padded"]["padding_share"] == pytest.approx(1 - 37 / 64)
    assert result["batch_1"]["full_real"]["padding_share"] == 0
    assert result["batch_4"]["full_padded"]["padding_share"] == pytest.approx(1 - 23 / 32)
    # the timed batch-4 bucket is one of the two: lengths 1,2,2,3 padded to 3, or 6,7,8,8 padded to 8
    assert result["batch_4"]["full_real"]["padding_share"] in (pytest.approx(1 - 8 / 12), pytest.approx(1 - 29 / 32))
    assert result["requests"] == 8 and result["mean_history"] == pytest.approx(37 / 8)
    state = result["state_bytes_per_user"]
    assert state["fp32_mean"] == pytest.approx(37 / 8 * (PER_POSITION + 8) + COUNTER_BYTES)
    for batch in (1, 4):
        check_rates_agree_with_the_timings(result[f"batch_{batch}"], batch)


def test_an_artifact_without_a_step_model_has_no_incremental_key(tiny_onnx, tiny_data):
    session = BenchSession(BenchConfig(**TINY_BENCH), torch.device("cpu"), tiny_data, 20)
    assert "incremental" not in session.measure(OnnxArtifact(tiny_onnx[1]))

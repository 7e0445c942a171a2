"""compress bench's `incremental` key: the three modes at two batch sizes, padding share, state bytes."""

import torch

from compress.bench import BenchConfig, BenchSession
from compress.bench_incremental import MODES, ROW_COLUMNS, incremental_rows
from compress.stages.base import Artifact
from tests.conftest import STEP_MAX_LEN, TINY_BENCH


def test_a_step_artifact_gets_the_incremental_figures(tiny_step_onnx, tiny_data):
    _, folder = tiny_step_onnx
    session = BenchSession(BenchConfig(**TINY_BENCH, threads=1), torch.device("cpu"), tiny_data, STEP_MAX_LEN)
    result = session.measure(Artifact(folder, "onnx"))["incremental"]
    assert result["max_len"] == STEP_MAX_LEN and set(result) >= {"batch_1", "batch_8", "state_bytes_per_user"}
    for batch in ("batch_1", "batch_8"):
        entry = result[batch]
        assert set(entry) == set(MODES)
        assert all(entry[m]["p50_ms"] > 0 and entry[m]["events_per_s"] > 0 for m in MODES)
        assert entry["step"]["speedup_vs_full_padded_cpu"] > 0
        assert 0 <= entry["full_real"]["padding_share"] < 1 and 0 <= entry["full_padded"]["padding_share"] < 1
    assert result["batch_1"]["full_real"]["padding_share"] == 0
    state = result["state_bytes_per_user"]
    assert state["per_position"] == 2 * 2 * 1 * 8 * 4  # key+value x 2 layers x 1 kv head x head_dim 8 x fp32
    assert state["fp32_mean"] <= state["fp32_at_max_len"]
    rows = incremental_rows(result)
    assert len(rows) == 2 * len(MODES) and all(len(row) == len(ROW_COLUMNS) for row in rows)


def test_an_artifact_without_a_step_model_has_no_incremental_key(tiny_onnx, tiny_data):
    session = BenchSession(BenchConfig(**TINY_BENCH), torch.device("cpu"), tiny_data, 20)
    assert "incremental" not in session.measure(Artifact(tiny_onnx[1], "onnx"))

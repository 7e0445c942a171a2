"""benchmarks/serve_load.py on a tiny artifact: a few requests per cell, a second per cell, loopback only."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_serve_load_smoke(tiny_step_onnx, tmp_path):
    args = [sys.executable, str(ROOT / "benchmarks" / "serve_load.py"), str(tiny_step_onnx[1]), "--out", str(tmp_path),
            "--concurrency", "1", "4", "--events", "1", "3", "--requests", "12", "--seconds", "1", "--warmup", "2",
            "--baseline-seconds", "0.1", "--users", "50"]
    if shutil.which("redis-server"):  # users start with a full window (the overflow policies' cost)
        args += ["--start-redis", "--overflow", "exact", "slide"]
    else:
        args += ["--history", "0"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((tmp_path / "serve_load.json").read_text())
    rows = data["rows"]
    policies = ["exact", "slide"] if shutil.which("redis-server") else ["exact"]
    assert len(rows) == (1 + len(policies)) * 2 * 2  # (stateless, stateful per policy) x events per request x concurrencies
    assert all(r["failures"] == 0 and 0 < r["requests"] <= 12 for r in rows)
    assert {(r["mode"], r["policy"], r["concurrency"], r["events_per_request"]) for r in rows} == {
        (m, p, c, e) for m, p in [("stateless", None), *(("stateful", p) for p in policies)]
        for c in (1, 4) for e in (1, 3)}
    assert all(r["events_per_s"] > 0 and r["p99_ms"] >= r["p50_ms"] > 0 for r in rows)
    assert all(r["server_seconds"]["model"] > 0 for r in rows if r["mode"] == "stateful")
    batches = {"1", "3", "4", "12"}
    assert set(data["in_process"]) == {f"recommend/{b}" for b in batches} | {
        f"events/{p}/{b}" for p in policies for b in batches} and data["targets"]
    if "slide" in policies:  # compared with exact on the same events
        assert 0 <= data["in_process"]["events/slide/12"]["same_top10"] <= 1
    assert "| stateful | exact | 1 | 4 | 3 |" in (tmp_path / "serve_load.md").read_text()


def test_serve_overflow_compares_slide_with_exact_past_max_len(tiny_step_onnx, tiny_data, tmp_path):
    """benchmarks/serve_overflow.py on the tiny step export (max_len 8): users past max_len are sampled, each
    one's first --past events past it are compared, and the agreement shares are fractions."""
    max_len, past = 8, 5
    ids = [str(i) for i in tiny_data.item_ids.tolist()[1:]][: max_len + past + 3]
    lines = ["user item"] + [f"long{u} {item}" for u in range(4) for item in ids] + [f"short {item}" for item in ids[:3]]
    data = tmp_path / "events.txt"
    data.write_text("\n".join(lines) + "\n")
    args = [sys.executable, str(ROOT / "benchmarks" / "serve_overflow.py"), str(tiny_step_onnx[1]), "--data", str(data),
            "--users", "3", "--past", str(past), "--out", str(tmp_path)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads((tmp_path / "overflow_agreement.json").read_text())
    assert out["max_len"] == max_len and out["users"] == 3 and out["users_past_max_len"] == 4
    assert out["overall"]["events"] == 3 * past
    assert out["by_events_past_max_len"]["1-1"]["events"] == 3
    assert all(0 <= b["same_top10"] <= 1 and 0 <= b["top10_overlap"] <= 1 for b in out["by_events_past_max_len"].values())
    assert out["overall"]["top10_overlap"] >= out["overall"]["same_top10"]

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
    if shutil.which("redis-server"):
        args.append("--start-redis")
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((tmp_path / "serve_load.json").read_text())
    rows = data["rows"]
    assert len(rows) == 2 * 2 * 2  # modes x events per request x concurrencies
    assert all(r["failures"] == 0 and 0 < r["requests"] <= 12 for r in rows)
    assert {(r["mode"], r["concurrency"], r["events_per_request"]) for r in rows} == {
        (m, c, e) for m in ("stateless", "stateful") for c in (1, 4) for e in (1, 3)}
    assert all(r["events_per_s"] > 0 and r["p99_ms"] >= r["p50_ms"] > 0 for r in rows)
    assert set(data["in_process"]) == {"1", "3", "4", "12"} and data["targets"]
    assert "| stateful | 1 | 4 | 3 |" in (tmp_path / "serve_load.md").read_text()

"""benchmarks/scaling.py, scale_eval.py, scale_data.py and topk_scale.py on tiny sizes (in this process)."""

from __future__ import annotations

import json
import sys

import pytest

LINUX_PROC = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")


@LINUX_PROC
def test_scaling_helpers(script, tmp_path):
    scaling = script("scaling.py")
    assert scaling.status_kib("VmHWM") >= scaling.status_kib("VmRSS") > 0
    row = scaling.run_child([sys.executable, "-c", "print('noise'); print('{\"a\": 1}')"], "ok")
    assert row == {"a": 1}
    assert scaling.run_child([sys.executable, "-c", "raise SystemExit(2)"], "fails") is None
    scaling.write_results(tmp_path, "x", [row], lambda rows: f"{len(rows)} row\n")
    assert json.loads((tmp_path / "x.json").read_text()) == [row] and (tmp_path / "x.md").read_text() == "1 row\n"


@LINUX_PROC
def test_scale_eval_measures_chunked_and_unchunked_alike(script):
    scale_eval = script("scale_eval.py")
    rows = [scale_eval.measure(items=300, users=24, chunk=chunk, batch_size=8, hidden=16, threads=1) for chunk in (64, 301)]
    assert rows[0]["mean_rank"] == pytest.approx(rows[1]["mean_rank"])  # every mode ranks alike
    for row, mode in zip(rows, ("chunked", "unchunked")):
        row["mode"] = mode
        assert row["seconds"] > 0 and row["users"] == 24
    table = scale_eval.markdown(rows)
    assert "| 300 | chunked | 64 |" in table and "| 300 | unchunked | 301 |" in table


@LINUX_PROC
@pytest.mark.parametrize("fmt", ["pairs", "csv", "parquet"])
def test_scale_data_writes_and_loads_each_format(script, tmp_path, fmt):
    scale_data = script("scale_data.py")
    path = scale_data.generate(2_000, fmt, tmp_path)
    assert scale_data.generate(2_000, fmt, tmp_path) == path  # written once, then reused
    row = {"interactions": 2_000, "format": fmt, "code": "this", "file_mib": 0.0, **scale_data.measure(path, fmt)}
    assert row["interactions"] == 2_000 and row["users"] > 0 and row["seconds"] >= 0
    assert "| 2,000 | " + fmt in scale_data.markdown([row]) and "| yes |" in scale_data.markdown([row])


@LINUX_PROC
def test_topk_scale_exports_measures_and_tabulates_small_catalogues(script, tmp_path):
    topk_scale = script("topk_scale.py")
    specs = topk_scale.variants([64])
    assert list(specs) == ["full", "chunked 64", "chunked 64, int8 table"]
    rows, full_ids = [], None
    for name in ("full", "chunked 64"):
        folder = tmp_path / name.replace(" ", "_")
        topk_scale.export(200, name, specs[name], folder)
        row = topk_scale.measure(folder, 200, iterations=2, threads=1)
        top_ids = row.pop("top_ids")
        full_ids = full_ids or top_ids
        recall = sum(len(set(a) & set(b)) for a, b in zip(top_ids, full_ids)) / (10 * len(full_ids))
        rows.append({"items": 200, "variant": name, "threads": 1, "top_k": 10, "recall@10_vs_full": recall, **row})
        assert row["p50_ms_batch1"] > 0 and row["seq_per_s_batch256"] > 0
    assert rows[1]["recall@10_vs_full"] == pytest.approx(1.0)  # the chunked running top-K is exact
    assert "| 200 | chunked 64 |" in topk_scale.markdown(rows)

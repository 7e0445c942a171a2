"""Honest small-data reports (issue 34, item 3): a teacher within noise of popularity is flagged, differences
are counted in hits on a small test set, noisy latencies are marked, the scoring model is sized apart from
step.onnx, and a peak-memory ratio of unlike measurements is dropped."""

from __future__ import annotations

import copy

import pytest

from compress.report.collect import RunSummary, StageRow, drop_unlike_memory_ratios
from compress.report.noise import (half_width, hits_cell, latency_noise, popularity_warning, scoring_model_bytes,
                                   teacher_versus_popularity)
from compress.report.tables import stage_table

# the case: a 300-user sample where the teacher's NDCG@10 equals the popularity baseline's
SMALL = {
    "name": "sample", "data": {"fingerprint": "f", "stats": {"users": 300}},
    "baseline": {"metrics": {"ndcg@10": 0.0207, "hr@10": 0.0467, "mrr@10": 0.0130}},
    "stages": [{"name": "train", "metrics": {"ndcg@10": 0.0207, "hr@10": 0.0467, "mrr@10": 0.0130}}],
}


def test_a_teacher_within_noise_of_popularity_is_flagged():
    check = teacher_versus_popularity(SMALL)
    assert check["within_noise"] and check["users"] == 300
    warning = popularity_warning(SMALL)
    assert "within noise of the popularity baseline (0.0207" in warning and "300 test users" in warning
    clear = copy.deepcopy(SMALL)
    clear["stages"][0]["metrics"]["ndcg@10"] = 0.20  # far above popularity: no warning
    assert popularity_warning(clear) is None
    big = copy.deepcopy(SMALL)
    big["data"]["stats"]["users"] = 1_000_000
    big["stages"][0]["metrics"]["ndcg@10"] = 0.0227  # a small margin, but on a million users it is real
    assert popularity_warning(big) is None


def test_the_noise_bound():
    assert half_width(0.5, 100) == pytest.approx(1.96 * 0.05)
    assert half_width(0.0, 100) == 0.0 and half_width(0.3, 0) == float("inf")


def test_hits_say_13_versus_14_not_a_ratio():
    assert hits_cell(13 / 300, 14 / 300, 300) == "13 (-1)"
    assert hits_cell(14 / 300, None, 300) == "14"


@pytest.mark.parametrize("bench, noisy", [
    ({"latency_ms": {}}, "1 round"),
    ({"rounds": 2, "round_latency_p50_ms": [1.0, 1.1]}, "2 rounds"),
    ({"round_latency_p50_ms": [1.0, 1.05, 0.98]}, None),
    ({"round_latency_p50_ms": [34.0, 14.0, 15.0]}, "rounds spread 133%"),
    (None, None),
])
def test_latency_noise(bench, noisy):
    assert latency_noise(bench) == noisy


def test_the_scoring_model_is_sized_apart_from_the_step_model(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"x" * 410)
    (tmp_path / "step.onnx").write_bytes(b"x" * 443)
    (tmp_path / "metadata.json").write_bytes(b"x" * 67)
    assert scoring_model_bytes(tmp_path) == 410
    assert scoring_model_bytes(tmp_path / "nothing") is None


def bench(engine: str, rounds: list[float]) -> dict:
    return {"engine": engine, "device": "cpu", "session": "s", "memory": {"kind": "process_rss", "increase_bytes": 1},
            "round_latency_p50_ms": rounds, "reference": {"session": "s"}, "ratios": {}}


def row(stage: str, engine: str, ndcg: float, hr: float, rounds: list[float], memory_ratio: float) -> StageRow:
    values = {"ndcg@10": ndcg, "hr@10": hr, "mrr@10": 0.01, "params": 10, "size_bytes": 900 * 1024,
              "model_bytes": 410 * 1024, "latency_p50_ms": 1.0, "throughput_seq_per_s": 10.0}
    ratios = {"ndcg@10": 1.0, "hr@10": 1.0, "mrr@10": 1.0, "params": 1.0, "size_bytes": 1.0, "model_bytes": 1.0,
              "latency_p50_ms": 1.0, "throughput_seq_per_s": 1.0, "peak_memory_bytes": memory_ratio}
    return StageRow("sample", stage, values, ratios, bench(engine, rounds), key=stage)


def test_small_run_table_has_hits_noise_marks_and_the_scoring_model_column():
    teacher = row("train", "torch-eager", 0.0207, 14 / 300, [34.0], 1.0)
    student = row("prune", "torch-eager", 0.0265, 13 / 300, [1.0, 1.02, 0.99], 0.8)
    onnx = row("quantize", "onnxruntime-cpu", 0.0207, 14 / 300, [1.0, 1.0, 1.0], 3248.0)
    run = RunSummary("sample", None, SMALL, rows=[teacher, student, onnx])
    drop_unlike_memory_ratios(run)
    assert student.ratios["peak_memory_bytes"] == 0.8 and onnx.ratios["peak_memory_bytes"] is None
    table = stage_table([run])
    cells = {r[0]: dict(zip(table.columns, r)) for r in table.rows}
    hits = "hits@10 of 300 test users (vs teacher)"
    assert cells["prune"][hits] == "13 (-1)" and cells["train"][hits] == "14" and cells["popularity"][hits] == "14 (+0)"
    assert cells["train"]["latency p50 (ms, batch 1)"].endswith("~noisy")  # one round
    assert not cells["prune"]["latency p50 (ms, batch 1)"].endswith("~noisy")
    assert cells["prune"]["scoring model file"] == "410.0 KiB (1.00x)"
    assert "size (all files)" in table.columns


def test_the_quality_plot_has_the_baseline_error_bars_and_an_honest_axis(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from compress.report.plots import plot_quality_latency

    figures, save = {}, Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, path, *a, **k: (figures.setdefault("f", fig), save(fig, path, *a, **k)))
    rows = [row("train", "torch-eager", 0.0207, 0.05, [1.0], 1.0), row("prune", "torch-eager", 0.0265, 0.05, [1.0], 1.0)]
    rows[1].values["latency_p50_ms"] = 0.5
    plot_quality_latency(rows, tmp_path / "q.png", baseline=0.0207, users=[300, 300])
    ax = figures["f"].axes[0]
    assert ax.get_ylim()[0] == 0  # not 0.020-0.028
    labels = [line.get_label() for line in ax.lines]
    assert "popularity baseline (0.0207)" in labels
    assert len(ax.collections) >= 3  # points, rings and the error bars


def test_run_summary_flags_the_teacher_and_counts_hits(capsys):
    from rich.console import Console

    from compress.cli import _warn_small_data, metrics_table

    manifest = copy.deepcopy(SMALL)
    manifest["stages"][0].update(params=10, size_bytes=100, seconds=1.0)
    manifest["stages"].append({"name": "prune", "params": 5, "size_bytes": 50, "seconds": 1.0,
                               "metrics": {"ndcg@10": 0.0265, "hr@10": 13 / 300, "mrr@10": 0.01}})
    console = Console(width=200, record=True)
    console.print(metrics_table(manifest))
    text = console.export_text()
    assert "hits@10 (vs teacher)" in text and "13 (-1)" in text and "300 test users" in text
    _warn_small_data(manifest)
    err = " ".join(capsys.readouterr().err.split())
    assert "within noise of the popularity baseline" in err


def test_bench_command_table_marks_noise_and_names_the_memory_kind(tmp_path):
    import json

    from rich.console import Console

    from compress.cli import bench_table

    summary = {"engine": "torch-eager", "latency_p50_ms": 34.0, "latency_p95_ms": 40.0, "throughput_seq_per_s": 100.0,
               "peak_memory_bytes": 1024, "params": 10,
               "ratios": {"latency_p50_ms": 2.42, "throughput_seq_per_s": 1.0, "params": 1.0}}
    manifest = {"name": "sample", "stages": [{"name": "prune", "output": "03-prune/model", "bench": summary}]}
    (tmp_path / "03-prune").mkdir()
    (tmp_path / "03-prune" / "bench.json").write_text(json.dumps(
        {"round_latency_p50_ms": [34.0], "memory": {"kind": "process_rss"}}))
    console = Console(width=200, record=True)
    console.print(bench_table(manifest, tmp_path))
    text = console.export_text()
    assert "34.00 (x2.42) ~noisy" in text and "(process_rss)" in text and "fewer than 3 rounds" in text

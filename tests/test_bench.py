from pathlib import Path

import numpy as np
import pytest
import torch

from compress.runs.files import read_json
from compress.bench.config import BenchConfig
from compress.bench.results import headline
from compress.bench.runs import bench_run
from compress.bench.session import BenchSession, ratios
from compress.bench.timing import latency_stats, make_batch, time_calls
from compress.export.onnx_export import ExportSettings, export_onnx
from compress.models import load_model, save_model
from compress.models.flops import flops_per_sequence
from compress.methods.surgery import keep_layers
from compress.pipeline import RunOptions, run_recipe
from compress.recipe import validate_recipe
from compress.handlers import OnnxArtifact, TorchArtifact
from tests.conftest import TINY_BENCH, tiny_distill_recipe

CPU = torch.device("cpu")


def test_latency_stats_and_ratio_arithmetic():
    stats = latency_stats(np.arange(1.0, 101.0))
    assert stats["p50"] == pytest.approx(50.5) and stats["mean"] == pytest.approx(50.5)
    assert stats["p95"] == pytest.approx(95.05) and stats["p99"] == pytest.approx(99.01)
    got = ratios({"latency_p50_ms": 2.0, "params": 30, "peak_memory_bytes": 5}, {"latency_p50_ms": 4.0, "params": 120, "peak_memory_bytes": 0})
    assert got == {"latency_p50_ms": 0.5, "params": 0.25, "peak_memory_bytes": None}


def test_make_batch_fixed_and_realistic_lengths():
    histories = [np.array([3, 4]), np.array([5, 6, 7])]
    ids, mask = make_batch(histories, "fixed", max_len=6)
    assert ids.shape == (2, 6) and ids.dtype == np.int64 and ids[1].tolist() == [0, 0, 0, 5, 6, 7]
    ids, mask = make_batch(histories, "realistic", max_len=6)
    assert ids.shape == (2, 3) and mask[0].tolist() == [0, 1, 1]


def test_time_calls_times_only_after_warmup():
    calls, rolled_back = [], []
    timings = time_calls(calls.append, list(range(5)), warmup=2, after=rolled_back.append)
    assert calls == [0, 1, 2, 3, 4] and rolled_back == calls  # `after` follows every call, warm-up included
    assert len(timings.wall_ms) == 3 and (timings.wall_ms >= 0).all()
    assert len(timings.cpu_ms) == 3 and timings.cpu_ms.min() >= 0  # one CPU time per timed call


@pytest.fixture
def teacher_and_student(tmp_path, tiny_model):
    save_model(tiny_model, tmp_path / "teacher")
    save_model(keep_layers(tiny_model, [0]), tmp_path / "student")
    return TorchArtifact(tmp_path / "teacher"), TorchArtifact(tmp_path / "student")


def test_session_result_structure_and_same_session_ratios(tiny_data, teacher_and_student):
    teacher, student = teacher_and_student
    messages = []
    session = BenchSession(BenchConfig(**TINY_BENCH), CPU, tiny_data, 20, log=messages.append)
    result = session.bench(student, teacher)

    assert {"session", "engine", "device", "environment", "settings", "params", "size_bytes", "latency_ms",
            "throughput_seq_per_s", "memory", "reference", "ratios"} <= result.keys()
    assert set(result["latency_ms"]) == {"fixed", "realistic"}
    assert {"p50", "p95", "p99", "mean"} <= result["latency_ms"]["fixed"].keys()
    assert result["engine"] == "torch-eager" and result["environment"]["cpu_count"] >= 1
    assert result["memory"]["kind"] == "process_rss" and result["memory"]["peak_bytes"] > 0
    # the teacher was measured by this session before the ratio was taken, once
    assert result["reference"]["session"] == result["session"] == session.id
    assert sum("measuring the teacher" in m for m in messages) == 1
    numbers, reference = headline(result), result["reference"]
    for key, ratio in result["ratios"].items():
        assert ratio == pytest.approx(numbers[key] / reference[key]) if reference[key] else ratio is None
    assert result["ratios"]["params"] < 1

    # CPU time of the same calls (every thread of the process), positive
    assert result["cpu_time"]["latency_p50_ms"] > 0 and result["cpu_time"]["ms_per_sequence"] > 0
    # the physical-limit numbers: FLOPs counted from the shape, GFLOP/s from the medians measured here
    flops = result["flops_per_sequence"]["total"]
    assert flops == flops_per_sequence(load_model(student.path).config)["total"]
    assert flops < reference["flops_per_sequence"]  # one layer of the teacher's two
    assert numbers["gflops_batch1"] == pytest.approx(flops / (result["latency_ms"]["fixed"]["p50"] / 1000) / 1e9)
    assert numbers["gflops_throughput"] == pytest.approx(flops * result["throughput_seq_per_s"]["fixed"] / 1e9)

    again = session.bench(teacher, teacher)
    assert again["ratios"]["params"] == 1 and again["ratios"]["latency_p50_ms"] == 1
    assert sum("measuring the teacher" in m for m in messages) == 1


@pytest.mark.slow
def test_run_benches_stages_and_cached_teacher_is_remeasured(tmp_path):
    recipe = tiny_distill_recipe(tmp_path)
    teacher_only = {**recipe, "stages": recipe["stages"][:1]}
    run_recipe(validate_recipe(teacher_only), RunOptions(show_progress=False, log=lambda _: None))
    run_dir = tmp_path / "artifacts" / "tiny"
    teacher_bench = read_json(run_dir / "01-train" / "bench.json")
    assert teacher_bench["ratios"]["latency_p50_ms"] == 1.0

    messages = []
    manifest = run_recipe(validate_recipe(recipe), RunOptions(show_progress=False, log=messages.append))
    student_bench = read_json(run_dir / "02-distill" / "bench.json")
    # the teacher's stored bench.json is from another process: the session measured it again
    assert any("measuring the teacher" in m for m in messages)
    assert student_bench["reference"]["session"] == student_bench["session"] != teacher_bench["session"]
    assert student_bench["reference"]["artifact"] == "01-train/model"
    summary = manifest["stages"][1]["bench"]
    assert summary["latency_p50_ms"] == student_bench["latency_ms"]["fixed"]["p50"]
    assert summary["ratios"] == student_bench["ratios"]

    rebenched = bench_run(run_dir, BenchConfig(**TINY_BENCH), "cpu", log=lambda _: None)
    sessions = {stage["bench"]["session"] for stage in rebenched["stages"]}
    assert len(sessions) == 1 and sessions != {teacher_bench["session"]}
    assert read_json(run_dir / "manifest.json")["stages"][0]["bench"]["session"] in sessions


def test_onnx_adapter_measures_an_exported_model(tmp_path, tiny_data, tiny_model):
    folder = tmp_path / "onnx"
    export_onnx(tiny_model, folder, ExportSettings(), list(range(1, tiny_data.num_items + 1)), {})
    predictor = OnnxArtifact(folder).predictor(CPU, threads=1)
    ids, mask = make_batch([np.array([1, 2, 3])], "realistic", predictor.max_len)
    assert np.asarray(predictor.predict(ids, mask)).shape == (1, tiny_data.num_items + 1)

    session = BenchSession(BenchConfig(**TINY_BENCH), CPU, tiny_data, 20)
    result = session.measure(OnnxArtifact(folder))
    assert result["engine"] == "onnxruntime-cpu" and result["params"] > 0
    assert result["latency_ms"]["realistic"]["p50"] > 0
    # the export records the shape, so the ONNX engine is credited with the same FLOPs as PyTorch
    assert result["flops_per_sequence"] == flops_per_sequence(tiny_model.config)
    assert headline(result)["gflops_batch1"] > 0


def test_onnx_without_a_cuda_provider_is_measured_as_a_cpu_engine(monkeypatch):
    ort = pytest.importorskip("onnxruntime")
    cuda = torch.device("cuda")
    onnx, model = OnnxArtifact(Path("onnx")), TorchArtifact(Path("model"))
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert onnx.device(cuda).type == "cpu" and model.device(cuda) == cuda
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert onnx.device(cuda) == cuda and onnx.device(CPU) == CPU


def test_rounds_interleave_the_teacher_and_take_medians(tiny_data, teacher_and_student, monkeypatch):
    teacher, student = teacher_and_student
    session = BenchSession(BenchConfig(**TINY_BENCH, rounds=3), CPU, tiny_data, 20, log=lambda _: None)
    # per call: (which model, p50 ms, seq/s); the teacher drifts, the student has one outlier round
    planned = iter([("teacher", 10.0, 100.0), ("student", 5.0, 300.0),
                    ("teacher", 20.0, 50.0), ("student", 5.0, 200.0),
                    ("teacher", 10.0, 100.0), ("student", 100.0, 400.0)])

    def fake_measure(artifact):
        name, p50, rate = next(planned)
        assert artifact.path.name == name  # the teacher right before the stage, every round
        return {"params": 7, "size_bytes": 9, "latency_ms": {"fixed": {"p50": p50, "p95": p50, "p99": p50}},
                "throughput_seq_per_s": {"fixed": rate}, "memory": {"increase_bytes": int(p50)}}

    monkeypatch.setattr(session, "measure", fake_measure)
    result = session.bench(student, teacher)
    assert result["rounds"] == 3 and result["latency_ms"]["fixed"]["p50"] == 5.0  # median of 5, 5, 100
    assert result["throughput_seq_per_s"]["fixed"] == 300.0 and result["memory"]["increase_bytes"] == 100
    assert result["reference"]["latency_p50_ms"] == 10.0 and result["reference"]["params"] == 7
    assert result["ratios"]["latency_p50_ms"] == 0.5  # median of 0.5, 0.25, 10
    assert result["ratios"]["throughput_seq_per_s"] == 4.0  # median of 3, 4, 4
    assert result["ratios"]["params"] == 1.0


def test_interleaved_rounds_measure_teachers_first_and_each_artifact_once(tiny_data, monkeypatch):
    from compress.bench.session import TEACHER_PREFIX, bench_interleaved

    session = BenchSession(BenchConfig(**TINY_BENCH), CPU, tiny_data, 20, log=lambda _: None)
    teacher = TorchArtifact(Path("/runs/a/teacher"))
    finals = {"a": TorchArtifact(Path("/runs/a/student")), "b": TorchArtifact(Path("/runs/a/student")),
              "c": TorchArtifact(Path("/runs/c/student")), "only-teacher": teacher}
    p50 = {"teacher": [10.0, 20.0, 10.0], "/runs/a/student": [5.0, 9.0, 4.0], "/runs/c/student": [6.0, 6.0, 50.0]}
    calls = []

    def fake_measure(artifact):
        key = "teacher" if artifact.path == teacher.path else str(artifact.path)
        calls.append(key)
        value = p50[key][calls.count(key) - 1]
        return {"params": 7, "size_bytes": 9, "latency_ms": {"fixed": {"p50": value, "p95": value, "p99": value}},
                "throughput_seq_per_s": {"fixed": 100 / value}, "memory": {"increase_bytes": 1}}

    monkeypatch.setattr(session, "measure", fake_measure)
    results = bench_interleaved(session, finals, {name: "t" for name in finals}, {"t": teacher}, rounds=3)
    assert calls == ["teacher", "/runs/a/student", "/runs/c/student"] * 3  # teacher first; a and b are one artifact
    assert results["a"]["round_latency_p50_ms"] == [5.0, 9.0, 4.0] == results["b"]["round_latency_p50_ms"]
    assert results["c"]["latency_ms"]["fixed"]["p50"] == 6.0 and results["c"]["ratios"]["latency_p50_ms"] == 0.6
    assert results["only-teacher"]["ratios"]["latency_p50_ms"] == 1.0
    assert results[TEACHER_PREFIX + "t"]["round_latency_p50_ms"] == [10.0, 20.0, 10.0]

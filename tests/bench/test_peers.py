"""Peers (compress/bench/peers.py): each installed peer of a tiny teacher gives a row keyed as a stage entry and
ranks as the teacher does; a missing or failing peer is skipped with its reason; the headline and report show them."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
import torch

from compress.bench import peers as peers_module
from compress.bench.config import BenchConfig
from compress.bench.peers import bench_peers, build_peers, peer_inputs
from compress.bench.session import BenchSession
from compress.evaluation.config import EvalConfig
from compress.handlers import TorchArtifact
from compress.models import save_model
from tests.conftest import TINY_BENCH, tiny_recipe

# onnxruntime.transformers puts its own folder on sys.path and imports its modules from there; a test that restores
# sys.path (the `script` fixture) would hide them from a later first import, so import it once here
importlib.import_module("onnxruntime.transformers.optimizer")

ROOT = Path(__file__).resolve().parents[2]
FLOAT_PEERS = ["ort-transformers-optimizer", "openvino-fp32"]  # same graph, float: the teacher's ranking
INT8_PEERS = ["openvino-nncf-int8", "olive"]
KEYS = {"ndcg@10", "hr@10", "mrr@10", "params", "size_bytes", "latency_p50_ms", "throughput_seq_per_s",
        "peak_memory_bytes"}


def installed(names: list[str]) -> list[str]:
    modules = {peer.name: peer.package for peer in peers_module.PEERS}
    return [name for name in names if importlib.util.find_spec(modules[name].split(".")[0]) is not None]


@pytest.fixture
def teacher(tiny_model, tmp_path: Path) -> TorchArtifact:
    save_model(tiny_model, tmp_path / "teacher")
    return TorchArtifact(tmp_path / "teacher")


def measure(names: list[str], teacher: TorchArtifact, data, tmp_path: Path):
    inputs = peer_inputs(teacher, data, tmp_path / "peers", seed=0)
    built, skipped = build_peers(inputs, tmp_path / "peers", names, log=lambda _: None)
    session = BenchSession(BenchConfig(**TINY_BENCH), torch.device("cpu"), data, 20, log=lambda _: None)
    rows, failed = bench_peers(session, built, teacher, data, EvalConfig())
    return {row["name"]: row for row in rows}, {**skipped, **failed}, session


def test_installed_peers_give_stage_rows_and_rank_as_the_teacher(teacher, tiny_data, tmp_path):
    names = installed(FLOAT_PEERS + INT8_PEERS)
    if not names:
        pytest.skip("no peer installed (pip install 'compress[peers]')")
    rows, skipped, session = measure(names, teacher, tiny_data, tmp_path)
    assert skipped == {} and set(rows) == set(names)
    for name, row in rows.items():
        assert KEYS <= set(row["values"]) and {"ndcg@10", "latency_p50_ms", "throughput_seq_per_s"} <= set(row["ratios"])
        assert row["bench"]["session"] == session.id and row["engine"] == row["bench"]["engine"]
        assert row["difference"]["users"] == tiny_data.num_users
        tolerance = 0.01 if name in FLOAT_PEERS else 0.05  # float: the teacher's ranking but near-ties; int8: 0.05
        assert abs(row["difference"]["mean"]) <= tolerance + 1e-6, name
    if "openvino-fp32" in rows:
        assert rows["openvino-fp32"]["engine"] == "openvino-cpu"


@pytest.mark.slow
def test_pytorch_peers_rank_as_the_teacher(teacher, tiny_data, tmp_path):
    names = installed(["torch-compile", "torchao-int8"])
    rows, skipped, _ = measure(names, teacher, tiny_data, tmp_path)
    assert skipped == {} and set(rows) == set(names)
    assert rows["torch-compile"]["engine"] == "torch-inductor"
    assert abs(rows["torch-compile"]["difference"]["mean"]) <= 0.01  # inductor reorders float sums: near-ties may swap
    if "torchao-int8" in rows:
        assert abs(rows["torchao-int8"]["difference"]["mean"]) <= 0.05


def test_a_missing_peer_is_skipped_with_its_reason(teacher, tiny_data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    inputs = peer_inputs(teacher, tiny_data, tmp_path / "peers", seed=0)
    built, skipped = build_peers(inputs, tmp_path / "peers", ["openvino-fp32"], log=lambda _: None)
    assert built == {} and "not installed" in skipped["openvino-fp32"] and "compress[peers]" in skipped["openvino-fp32"]


def test_a_peer_that_fails_to_build_is_skipped_with_the_error(teacher, tiny_data, tmp_path, monkeypatch):
    def broken(inputs, folder):
        raise RuntimeError("unsupported operator Attention\nmore detail")

    peer = peers_module.Peer("broken", "numpy", broken, "a peer that fails")
    monkeypatch.setattr(peers_module, "PEERS", (peer,))
    inputs = peer_inputs(teacher, tiny_data, tmp_path / "peers", seed=0)
    built, skipped = build_peers(inputs, tmp_path / "peers", log=lambda _: None)
    assert built == {} and skipped["broken"] == "build failed: RuntimeError: unsupported operator Attention"
    assert "neural-compressor" in skipped  # cannot install beside our pins: listed, never attempted


@pytest.mark.slow
def test_headline_writes_peers_rows_and_the_report_shows_them(tmp_path, monkeypatch):
    names = installed(["openvino-fp32", "ort-transformers-optimizer"])
    monkeypatch.setattr(peers_module, "PEERS", tuple(p for p in peers_module.PEERS if p.name in names))
    raw = tiny_recipe(tmp_path, epochs=1)
    raw.update(name="tinypeers", bench=dict(TINY_BENCH))
    raw["stages"].append({"stage": "export"})
    (tmp_path / "tiny.yaml").write_text(json.dumps(raw))
    results = tmp_path / "results"
    monkeypatch.setattr(sys, "argv", ["headline.py", "--recipe", str(tmp_path / "tiny.yaml"), "--runs",
                                      str(tmp_path / "runs"), "--results", str(results), "--no-controls",
                                      "--device", "cpu"])
    spec = importlib.util.spec_from_file_location("headline", ROOT / "benchmarks" / "headline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main() == 0
    out = json.loads((results / "tinypeers" / "headline.json").read_text())
    assert sorted(row["name"] for row in out["peers"]) == sorted(names)
    for row in out["peers"]:
        assert set(row["values"]) >= KEYS and row["bench"]["session"] == out["stages"][0]["bench"]["session"]
    assert "neural-compressor" in out["peers_skipped"]
    report = (results / "tinypeers" / "report.md").read_text()
    assert "## Peers" in report and all(f"| {name} |" in report for name in names)
    if "openvino-fp32" in names:
        assert "openvino" in out["versions"] and "version openvino" in report

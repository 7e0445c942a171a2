"""CUDA paths: training, the whole stack and the GPU-only quantize backends on a real GPU.

Skipped without CUDA (CI has none); run on a GPU machine with `pytest -m gpu`.
"""

from __future__ import annotations

import pytest
import torch

from compress.runs.files import read_json
from compress.models import load_model
from compress.pipeline import RunOptions, run_recipe
from compress.recipe import validate_recipe
from compress.stages.config import QuantizeConfig
from tests.conftest import TINY_BENCH, tiny_recipe

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

QUIET = RunOptions(show_progress=False, log=lambda _: None)
SHIPPED = QuantizeConfig().parity  # the gate a quantize stage ships with when a recipe sets no `parity:`


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("gpu-runs")


def cuda_recipe(folder, *stages, name: str, bench: bool = False) -> dict:
    raw = tiny_recipe(folder, epochs=2)
    raw["stages"] += list(stages)
    return {**raw, "name": name, "device": "cuda", "bench": {**TINY_BENCH, "enabled": bench}}


def test_the_whole_stack_runs_and_benchmarks_on_cuda(runs):
    stages = (
        {"stage": "distill", "num_layers": 1, "epochs": 1, "batch_size": 32},
        {"stage": "prune", "mlp_ratio": 0.5, "recovery": {"epochs": 1, "batch_size": 32}},
        {"stage": "export"},
        {"stage": "quantize"},  # the shipped parity gate
    )
    manifest = run_recipe(validate_recipe(cuda_recipe(runs, *stages, name="stack", bench=True)), QUIET)
    assert manifest["environment"]["device"].startswith("cuda")
    popularity = manifest["baseline"]["metrics"]["ndcg@10"]
    assert manifest["stages"][0]["metrics"]["ndcg@10"] > popularity
    for stage in manifest["stages"]:
        bench = read_json((runs / "artifacts" / "stack" / stage["output"]).parent / "bench.json")
        assert bench["device"].startswith("cuda")
        if stage["kind"] == "torch":
            assert bench["memory"]["kind"] == "cuda_max_allocated" and bench["memory"]["peak_bytes"] > 0


@pytest.mark.parametrize(
    "options", [{"backend": "fp16"}, {"backend": "bf16"}, {"backend": "bitsandbytes"},
                {"backend": "bitsandbytes", "mode": "nf4"}, {"backend": "bitsandbytes", "mode": "fp4"}],
)
def test_gpu_quantize_backends_keep_the_ranking_on_cuda(runs, options):
    if options["backend"] == "bitsandbytes":
        pytest.importorskip("bitsandbytes")
    name = "-".join(str(v) for v in options.values())
    manifest = run_recipe(validate_recipe(cuda_recipe(runs, {"stage": "quantize", **options}, name=name)), QUIET)
    train, stage = manifest["stages"]
    parity = stage["info"]["parity"]  # the stage passed the shipped gate; these say by how much
    assert parity["overlap@10"] >= SHIPPED.min_overlap and parity["ndcg_drop@10"] <= SHIPPED.max_ndcg_drop
    assert train["metrics"]["ndcg@10"] - stage["metrics"]["ndcg@10"] <= SHIPPED.max_ndcg_drop
    model = load_model(runs / "artifacts" / name / stage["output"], "cuda")
    assert next(model.parameters()).device.type == "cuda"
    ids = torch.randint(1, model.config.num_items + 1, (4, model.config.max_len), device="cuda")
    scores = model.score(model.last_states(ids, torch.ones_like(ids)))
    assert scores.shape == (4, model.config.num_items + 1) and torch.isfinite(scores[:, 1:]).all()


def test_onnxruntime_cuda_provider_matches_the_cpu_provider(tiny_onnx):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDA provider (install the gpu extra: onnxruntime-gpu)")
    import numpy as np

    from compress.serve.onnx_model import OnnxRecommender

    _, folder = tiny_onnx
    cpu = OnnxRecommender(folder, "cpu")
    gpu = OnnxRecommender(folder, "cuda")
    assert gpu.session.get_providers()[0] == "CUDAExecutionProvider"
    rng = np.random.default_rng(0)
    ids = rng.integers(1, cpu.num_items + 1, size=(8, cpu.max_len)).astype(np.int64)
    mask = np.ones_like(ids)
    np.testing.assert_allclose(gpu.scores(ids, mask)[:, 1:], cpu.scores(ids, mask)[:, 1:], rtol=1e-3, atol=1e-3)

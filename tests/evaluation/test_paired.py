import numpy as np
import torch
import pytest

from compress.evaluation.config import EvalConfig
from compress.evaluation.metrics import evaluate_model, metrics_from_ranks
from compress.evaluation.bootstrap import describe, excludes_zero
from compress.handlers import OnnxArtifact, TorchArtifact
from compress.evaluation.paired import ndcg_difference
from compress.models import save_model


def test_artifact_ranks_give_the_pipelines_metrics_for_torch_and_onnx(tiny_data, tiny_onnx, tmp_path):
    model, onnx_folder = tiny_onnx
    config = EvalConfig(ks=[5, 10])
    save_model(model, tmp_path / "model")
    torch_ranks = TorchArtifact(tmp_path / "model").ranks(tiny_data, config, torch.device("cpu"))
    onnx_ranks = OnnxArtifact(onnx_folder).ranks(tiny_data, config, torch.device("cpu"))

    assert torch_ranks.shape == onnx_ranks.shape == (tiny_data.num_users,)
    expected = evaluate_model(model, tiny_data, "test", config, "cpu")
    assert metrics_from_ranks(torch_ranks, config.ks)["ndcg@10"] == pytest.approx(expected["ndcg@10"])
    assert np.mean(torch_ranks == onnx_ranks) > 0.95  # the same model in two runtimes (float rounding aside)


def test_ndcg_difference_is_the_mean_per_user_difference_with_an_interval():
    reference = np.array([0, 3, 20, 1, 9, 50])
    candidate = np.array([1, 3, 2, 0, 30, 50])
    difference = ndcg_difference(candidate, reference)
    ndcg = lambda r: np.where(r < 10, 1 / np.log2(r + 2), 0.0)  # noqa: E731
    assert difference.mean == pytest.approx(np.mean(ndcg(candidate) - ndcg(reference)))
    assert difference.low <= difference.mean <= difference.high and difference.users == 6
    assert describe(difference).startswith(f"{difference.mean:+.4f} [")
    assert excludes_zero({"low": 0.01, "high": 0.02}) and not excludes_zero({"low": -0.01, "high": 0.02})

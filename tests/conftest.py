"""Shared tiny fixtures: a small synthetic dataset, a tiny model and a tiny recipe."""

from __future__ import annotations

import copy

from pathlib import Path
from typing import Any

import pytest
import torch

from compress.data import DataConfig, load_data
from compress.data.sequences import SequenceData
from compress.data.synthetic import SyntheticConfig
from compress.models import RecommenderConfig, SequentialRecommender

TINY_SYNTHETIC = {"users": 120, "items": 60, "clusters": 4, "min_len": 5, "max_len": 20}
TINY_MODEL = {"hidden_size": 16, "num_layers": 2, "num_heads": 2, "intermediate_size": 32}


@pytest.fixture(autouse=True)
def _few_threads() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_data() -> SequenceData:
    return load_data(DataConfig(synthetic=SyntheticConfig(**TINY_SYNTHETIC), max_len=20), seed=0)


@pytest.fixture
def tiny_model(tiny_data: SequenceData) -> SequentialRecommender:
    torch.manual_seed(0)
    config = RecommenderConfig(**TINY_MODEL, num_items=tiny_data.num_items, max_len=20, dropout=0.0)
    return SequentialRecommender(config).eval()


def with_prompt(model: SequentialRecommender, prefix_len: int = 3, suffix_len: int = 2) -> SequentialRecommender:
    """A copy of `model` inside a random fixed prompt, as an imported SLMRec teacher has (no peft needed)."""
    shape = model.config.model_copy(update={"prefix_len": prefix_len, "suffix_len": suffix_len})
    prompted = SequentialRecommender(shape)
    generator = torch.Generator().manual_seed(7)
    prompt = {name: torch.randn(buffer.shape, generator=generator) for name, buffer in prompted.prompt_embeddings().items()}
    prompted.load_state_dict({**model.state_dict(), **prompt})
    return prompted.eval()


def tiny_recipe(tmp_path: Path, **stage_overrides: Any) -> dict[str, Any]:
    """A recipe dict that trains a tiny teacher for 2 short epochs into tmp_path."""
    return copy.deepcopy({
        "name": "tiny",
        "seed": 0,
        "device": "cpu",
        "output_dir": str(tmp_path / "artifacts"),
        "data": {"source": "synthetic", "synthetic": TINY_SYNTHETIC, "max_len": 20},
        "eval": {"ks": [1, 5, 10, 20]},
        "stages": [
            {"stage": "train", "model": TINY_MODEL, "epochs": 2, "batch_size": 32, "lr": 0.01, **stage_overrides}
        ],
    })


TINY_BENCH = {"warmup": 1, "iterations": 3, "batch_size_throughput": 8, "throughput_iterations": 1}


def tiny_distill_recipe(tmp_path: Path, name: str = "tiny") -> dict[str, Any]:
    """tiny_recipe with 1 training epoch, a 1-layer distilled student and a few-iteration benchmark."""
    recipe = tiny_recipe(tmp_path, epochs=1)
    recipe["name"] = name
    recipe["stages"].append({"stage": "distill", "num_layers": 1, "epochs": 1, "batch_size": 32})
    recipe["bench"] = dict(TINY_BENCH)
    return recipe


@pytest.fixture(scope="session")
def tiny_onnx(tiny_data: SequenceData, tmp_path_factory: pytest.TempPathFactory) -> tuple[SequentialRecommender, Path]:
    """A tiny random model and its ONNX export (K = 10, the data's original item ids)."""
    from compress.export.onnx_export import ExportSettings, export_onnx

    torch.manual_seed(0)
    config = RecommenderConfig(**TINY_MODEL, num_items=tiny_data.num_items, max_len=20, dropout=0.0)
    model = SequentialRecommender(config).eval()
    folder = tmp_path_factory.mktemp("onnx") / "artifact"
    export_onnx(model, folder, ExportSettings(top_k=10), tiny_data.item_ids.tolist(), {"run": "test"})
    return model, folder


STEP_MAX_LEN = 8  # shorter than the tiny histories (5..20): both fitting and overflowing histories


@pytest.fixture(scope="session")
def tiny_step_onnx(tiny_data: SequenceData, tmp_path_factory: pytest.TempPathFactory) -> tuple[SequentialRecommender, Path]:
    """A tiny random model (max_len 8) exported with its step model (incremental: true)."""
    from compress.export.onnx_export import ExportSettings, export_onnx

    torch.manual_seed(1)
    config = RecommenderConfig(**TINY_MODEL, num_kv_heads=1, num_items=tiny_data.num_items, max_len=STEP_MAX_LEN,
                               dropout=0.0)
    model = SequentialRecommender(config).eval()
    folder = tmp_path_factory.mktemp("step") / "onnx"
    export_onnx(model, folder, ExportSettings(top_k=10, incremental=True, exporter="legacy"), tiny_data.item_ids.tolist(), {"run": "test"})
    return model, folder

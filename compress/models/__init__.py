"""Sequential recommenders: an LLaMA backbone over item embeddings.

Settings (`ModelShape`, `RecommenderConfig`, `QuantizationSpec`) live in config.py and import
without torch; the model and its loaders are imported on first use of these names.
"""

from __future__ import annotations

from typing import Any

from compress.models.config import ModelShape, QuantizationSpec, RecommenderConfig

__all__ = [
    "ModelShape",
    "QuantizationSpec",
    "RecommenderConfig",
    "SequentialRecommender",
    "init_backbone_from_llama",
    "load_model",
    "save_model",
    "shape_from_llama",
]
_LAZY = {"SequentialRecommender", "init_backbone_from_llama", "load_model", "save_model", "shape_from_llama"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from compress.models import recommender

        return getattr(recommender, name)
    raise AttributeError(f"module 'compress.models' has no attribute {name!r}")

"""Sequential recommenders: an LLaMA backbone over item embeddings."""

from compress.models.recommender import (
    ModelShape,
    RecommenderConfig,
    SequentialRecommender,
    init_backbone_from_llama,
    load_model,
    save_model,
    shape_from_llama,
)

__all__ = [
    "ModelShape",
    "RecommenderConfig",
    "SequentialRecommender",
    "init_backbone_from_llama",
    "load_model",
    "save_model",
    "shape_from_llama",
]

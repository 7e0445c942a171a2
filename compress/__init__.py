"""compress: turn an LLM-backbone sequential recommender into small, fast, deployable students."""

__version__ = "0.1.0"

"""The recipe's evaluation settings and parity gates (pydantic only: importable without torch)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from compress.export.config import Engine

Protocol = Literal["full", "sampled"]


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ks: list[int] = Field([1, 5, 10, 20], description="Cut-offs K for HR/NDCG/MRR@K.")
    mask_history: bool = Field(True, description="Remove the user's history items from the candidates.")
    protocol: Protocol = Field("full", description="Full ranking, or target vs sampled negatives.")
    num_negatives: int = Field(999, ge=1, description="Negatives per user for protocol: sampled.")
    seed: int = Field(0, description="Seed of the sampled negatives.")
    batch_size: int = Field(256, ge=1, description="Users scored at once.")
    max_users: int | None = Field(None, ge=1, description="Evaluate only the first N users (quick checks).")
    item_chunk: int = Field(
        8192, ge=1, description="Items scored at once in full ranking: bounds memory to batch_size x item_chunk "
        "scores for large catalogues; the metrics do not depend on it."
    )


class ParityConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    users: int = Field(512, ge=1, description="Held-out (test) users compared.")
    k: int = Field(10, ge=1, description="Cut-off of the top-K overlap and NDCG.")
    min_overlap: float = Field(0.99, ge=0, le=1, description="Fail below this mean top-K overlap.")
    max_ndcg_drop: float = Field(0.01, ge=0, description="Fail when NDCG@K drops by more than this.")
    engines: list[Engine] = Field(
        ["onnxruntime"], min_length=1,
        description="ONNX artifacts: the engines whose ranking is checked, each against the thresholds "
        "(add openvino to serve the artifact with OpenVINO).",
    )

"""The recipe's `bench` section and `compress bench` options (pydantic only, no torch)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from compress.export.config import Engine


class BenchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Benchmark every stage's artifact after evaluating it.")
    warmup: int = Field(5, ge=0, description="Untimed calls before timing starts (per length mode).")
    iterations: int = Field(50, ge=1, description="Timed batch-1 calls per length mode (latency percentiles).")
    batch_size_throughput: int = Field(256, ge=1, description="Batch size of the throughput measurement.")
    throughput_iterations: int = Field(5, ge=1, description="Timed large-batch calls per length mode.")
    threads: int | None = Field(None, ge=1, description="CPU threads while measuring: torch, onnxruntime intra-op (null: defaults).")
    engine: Engine = Field(
        "onnxruntime", description="What runs the ONNX stages: onnxruntime, or OpenVINO (the openvino extra; CPU)."
    )
    seed: int = Field(0, description="Seed of the test users whose histories are the inputs.")
    rounds: int = Field(
        1, ge=1,
        description="Rounds per stage; with more than 1 the teacher is re-measured just before the stage in "
        "every round, numbers are medians over rounds and ratios the median of the per-round ratios "
        "(steadier on a noisy machine).",
    )

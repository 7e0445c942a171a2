"""The stage registry: one StageSpec per stage, keyed by a recipe's `stage:` name.

A spec says what the recipe and the pipeline need to know about a stage without running it
(and without importing torch): its config model, the artifact kind it takes (None: it must
come first) and gives, whether it trains data parallel under torchrun (every rank runs it,
rank 0 alone saves; the other stages run on rank 0 only), a chain check that rejects a
place in the recipe where it cannot work, the decoder depth of its output when its config
alone says so, and what it reads besides its input artifact (for the cache id). The stage's
`run` is in its module (train.py, ...), listed in runners.py, which imports torch.
Adding a stage means adding its config (config.py), its module with `run`, a spec here and
its line in runners.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from pydantic import BaseModel

from compress.runs.files import CONFIG_FILE, WEIGHTS_FILE, WEIGHTS_INDEX_FILE, folder_sha256, sha256_file, weight_files
from compress.stages.config import (
    ArtifactKind,
    DistillConfig,
    ExportConfig,
    ItemTableConfig,
    LoadConfig,
    PruneConfig,
    QuantizeConfig,
    TrainConfig,
)

ChainCheck = Callable[[Any, int, list[Any]], None]  # (config, index, all stage configs); ValueError if misplaced


def _fits_anywhere(config: Any, index: int, stages: list[Any]) -> None:
    """The default chain check: accepts/produces say it all."""


def _nothing(config: Any) -> None:
    """The default depth (not known from the config) and content id (nothing read besides the input)."""


@dataclass(frozen=True)
class StageSpec:
    name: str
    config: type[BaseModel]
    accepts: Callable[[Any], ArtifactKind | None]
    produces: Callable[[Any], ArtifactKind]
    data_parallel: bool = False
    check_chain: ChainCheck = _fits_anywhere
    depth_after: Callable[[Any], int | None] = _nothing
    content_id: Callable[[Any], str | None] = _nothing


def _always(kind: ArtifactKind | None) -> Callable[[Any], ArtifactKind | None]:
    return lambda config: kind


def _quantize_kind(config: QuantizeConfig) -> ArtifactKind:
    """onnxruntime takes and gives ONNX; the other backends PyTorch models."""
    return "onnx" if config.backend == "onnxruntime" else "torch"


def _load_files(config: LoadConfig) -> str:
    """What the cache must notice: the files' contents (config.json, the weights or every shard), not only their path."""
    return ":".join(sha256_file(path) for path in [config.path / CONFIG_FILE, *weight_files(config.path)])


def _init_from_files(config: TrainConfig) -> str | None:
    """The init_from checkpoint's contents, not only its path: replacing its files reruns the stage."""
    return folder_sha256(config.init_from) if config.init_from else None


def _check_load(config: LoadConfig, index: int, stages: list[Any]) -> None:
    """config.json and the weights: model.safetensors or, for a teacher to import, a sharded checkpoint with every shard."""
    try:
        weights = weight_files(config.path) if (config.path / CONFIG_FILE).is_file() else []
    except ValueError as exc:
        raise ValueError(f"stages.{index}.path: {exc}") from None
    sharded = bool(weights) and weights[0].name == WEIGHTS_INDEX_FILE
    if not weights or (sharded and not config.importing):
        also = f", or {WEIGHTS_INDEX_FILE} and its shards for a teacher to import" if config.importing else ""
        raise ValueError(f"stages.{index}.path: {config.path} is not a model folder (config.json + {WEIGHTS_FILE}{also})")
    missing = [path.name for path in weights if not path.is_file()]
    if missing:
        raise ValueError(f"stages.{index}.path: {config.path / WEIGHTS_INDEX_FILE} names shards the folder lacks: "
                         f"{', '.join(missing[:5])}")


def _check_distill(config: DistillConfig, index: int, stages: list[Any]) -> None:
    """The student must be shallower than the teacher, and B at most its depth."""
    teacher_layers = depth_after(stages[index - 1]) if index > 0 else None
    if teacher_layers is not None and config.num_layers >= teacher_layers:
        raise ValueError(
            f"stages.{index} (distill): the student asks for {config.num_layers} layers "
            f"but the teacher has {teacher_layers}; a student keeps fewer layers than its teacher"
        )
    if config.blocks > config.num_layers:
        raise ValueError(
            f"stages.{index} (distill): blocks ({config.blocks}) must be at most the student's layers ({config.num_layers})"
        )


def _check_quantize(config: QuantizeConfig, index: int, stages: list[Any]) -> None:
    """A PyTorch-quantized model is for serving: no stage may follow it."""
    if config.backend == "onnxruntime" or index == len(stages) - 1:
        return
    following = stages[index + 1].stage
    if following == "export":
        raise ValueError(
            f"stages.{index + 1} (export) cannot export a {config.backend}-quantized model: its layers have no ONNX "
            "form (both torch.onnx exporters fail). Export the float model, then quantize with backend: onnxruntime"
        )
    raise ValueError(f"stages.{index + 1} ({following}) cannot follow quantize (backend {config.backend}): "
                     "a PyTorch-quantized model can only be served; put quantize last")


def _check_item_table(config: ItemTableConfig, index: int, stages: list[Any]) -> None:
    """A compressed table is exported (or served from PyTorch): only export may follow."""
    if index < len(stages) - 1 and stages[index + 1].stage != "export":
        raise ValueError(f"stages.{index + 1} ({stages[index + 1].stage}) cannot follow item_table: "
                         "a model with a compressed item table can only be exported; put item_table after training")


STAGES: dict[str, StageSpec] = {
    spec.name: spec
    for spec in (
        StageSpec("train", TrainConfig, _always(None), _always("torch"), data_parallel=True,
                  depth_after=lambda config: config.model.num_layers, content_id=_init_from_files),
        StageSpec("load", LoadConfig, _always(None), _always("torch"),
                  check_chain=_check_load, content_id=_load_files),
        StageSpec("distill", DistillConfig, _always("torch"), _always("torch"),
                  data_parallel=True, check_chain=_check_distill, depth_after=lambda config: config.num_layers),
        StageSpec("prune", PruneConfig, _always("torch"), _always("torch"), data_parallel=True),
        StageSpec("item_table", ItemTableConfig, _always("torch"), _always("torch"),
                  data_parallel=True, check_chain=_check_item_table),
        StageSpec("export", ExportConfig, _always("torch"), _always("onnx")),
        StageSpec("quantize", QuantizeConfig, _quantize_kind, _quantize_kind,
                  check_chain=_check_quantize),
    )
}


def spec_of(config: Any) -> StageSpec:
    """The spec of the stage a recipe entry configures."""
    return STAGES[config.stage]


def depth_after(config: Any) -> int | None:
    """Decoder layers the stage configured by `config` outputs, when its config alone says so."""
    return spec_of(config).depth_after(config)

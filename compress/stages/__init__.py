"""The stage registry: the one mapping from a recipe's `stage:` name to its module.

A stage module defines NAME, Config (pydantic, with `stage: Literal[NAME]`), ACCEPTS (the
artifact kind it takes, None for a first stage), PRODUCES, and run(ctx, config, source).
ACCEPTS and PRODUCES may be functions of the stage's config (quantize: onnxruntime takes and
gives ONNX, the other backends torch). A module may also define
`check_chain(config, index, stages)`, raising ValueError when its place in the recipe's chain
cannot work (e.g. bitsandbytes weights into ONNX export); the recipe calls it up front.
`DATA_PARALLEL = True` marks a stage that trains with `fit`: under torchrun every rank runs
it (rank 0 alone saves); the other stages run on rank 0 only.
Adding a stage means adding its file and one line here.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from compress.stages import distill, export, item_table, load, prune, quantize, train

STAGES: dict[str, ModuleType] = {module.NAME: module for module in (train, load, distill, prune, item_table, export, quantize)}


def accepts(config: Any) -> str | None:
    """The artifact kind the stage configured by `config` takes (None: it must come first)."""
    kind = STAGES[config.stage].ACCEPTS
    return kind(config) if callable(kind) else kind


def produces(config: Any) -> str:
    """The artifact kind the stage configured by `config` writes."""
    kind = STAGES[config.stage].PRODUCES
    return kind(config) if callable(kind) else kind


def content_id(config: Any) -> str | None:
    """What the stage reads besides its input artifact (e.g. load's file hashes), for the cache id."""
    reader = getattr(STAGES[config.stage], "content_id", None)
    return reader(config) if reader is not None else None

"""Each stage's module, imported by name: what `run_recipe` calls (a reader or a static tool follows
`run_stage` into train.py, distill.py, ...). Kept apart from the registry, which validates recipes
without torch.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from compress.handlers import Artifact
from compress.stages import distill, export, item_table, load, prune, quantize, train
from compress.stages.base import StageContext, StageResult

STAGE_MODULES: dict[str, ModuleType] = {
    "train": train,
    "load": load,
    "distill": distill,
    "prune": prune,
    "item_table": item_table,
    "export": export,
    "quantize": quantize,
}


def run_stage(ctx: StageContext, config: Any, source: Artifact | None) -> StageResult:
    """Run the stage `config` configures on `source` (its module's `run`, looked up at call time)."""
    return STAGE_MODULES[config.stage].run(ctx, config, source)

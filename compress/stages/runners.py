"""Each stage's `run`, imported by name: what `run_recipe` calls (a reader or a static tool follows it
here). Kept apart from the registry, which validates recipes without torch.
"""

from __future__ import annotations

from typing import Any, Callable

from compress.handlers import Artifact
from compress.stages import distill, export, item_table, load, prune, quantize, train
from compress.stages.base import StageContext, StageResult

RunFn = Callable[[StageContext, Any, "Artifact | None"], StageResult]

RUNNERS: dict[str, RunFn] = {
    "train": train.run,
    "load": load.run,
    "distill": distill.run,
    "prune": prune.run,
    "item_table": item_table.run,
    "export": export.run,
    "quantize": quantize.run,
}


def run_stage(ctx: StageContext, config: Any, source: Artifact | None) -> StageResult:
    """Run the stage `config` configures on `source`."""
    return RUNNERS[config.stage](ctx, config, source)

"""Load stage: start a chain from a model trained elsewhere (e.g. another run's teacher).

The model folder is verified (it must load, and fit the recipe's catalogue) and linked into
the run. Its cache id includes the weights' and config's sha256, so replacing the files
reruns the chain while a plain rerun reuses it.
"""

from __future__ import annotations

from compress.runs.files import CONFIG_FILE, WEIGHTS_FILE, link_or_copy
from compress.errors import RecipeError
from compress.models import load_model
from compress.stages.config import LoadConfig
from compress.handlers import TorchArtifact
from compress.stages.base import StageContext, StageResult


def run(ctx: StageContext, config: LoadConfig, source: Artifact | None) -> StageResult:
    model = load_model(config.path)
    if model.config.num_items != ctx.data.num_items:
        raise RecipeError(
            f"load: {config.path} scores {model.config.num_items} items but the recipe's data has {ctx.data.num_items}",
            "load a model trained on the same dataset and preprocessing",
        )
    ctx.model_folder.mkdir(parents=True, exist_ok=True)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        (ctx.model_folder / name).unlink(missing_ok=True)
        link_or_copy(config.path / name, ctx.model_folder / name)
    ctx.log(f"loaded {model.num_parameters():,} parameters from {config.path}")
    return StageResult(TorchArtifact(ctx.model_folder), {"source": str(config.path)})


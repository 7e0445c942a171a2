"""The search space in Optuna's terms: suggestions per trial, the grid, and the sampler.

Optuna's categorical choices must be plain scalars, so a `drop_stages` choice (a list of stage
names) is suggested as its text, `prune+quantize` (`none` for the empty list), and decoded back.
"""

from __future__ import annotations

import math
from typing import Any

import optuna

from compress.errors import RecipeError
from compress.runs.files import stable_hash
from compress.search.spec import DROP_STAGES, Range, SearchSpec, objective_key

NO_STAGES = "none"


def encode(key: str, value: Any) -> Any:
    return ("+".join(value) or NO_STAGES) if key == DROP_STAGES else value


def decode(key: str, value: Any) -> Any:
    return ([] if value == NO_STAGES else value.split("+")) if key == DROP_STAGES else value


def suggest(trial: optuna.Trial, spec: SearchSpec) -> dict[str, Any]:
    """This trial's value of every space entry (decoded: `drop_stages` is a list)."""
    params: dict[str, Any] = {}
    for key, value in spec.space.items():
        if isinstance(value, list):
            params[key] = decode(key, trial.suggest_categorical(key, [encode(key, v) for v in value]))
        elif value.integer:
            params[key] = trial.suggest_int(key, int(value.low), int(value.high), step=int(value.step or 1), log=value.log)
        else:
            params[key] = trial.suggest_float(key, float(value.low), float(value.high), step=value.step, log=value.log)
    return params


def decode_params(params: dict[str, Any]) -> dict[str, Any]:
    """A stored trial's params as the recipe takes them."""
    return {key: decode(key, value) for key, value in params.items()}


def grid(spec: SearchSpec) -> dict[str, list[Any]] | None:
    """Every value of every entry (encoded), or None when a range has no step (not enumerable)."""
    out: dict[str, list[Any]] = {}
    for key, value in spec.space.items():
        values = value if isinstance(value, list) else value.grid()
        if values is None:
            return None
        out[key] = [encode(key, v) for v in values]
    return out


def grid_size(space: dict[str, list[Any]]) -> int:
    return math.prod(len(values) for values in space.values())


def candidate_id(recipe: dict[str, Any]) -> str:
    """A run folder name from the recipe a trial's values make (spec.apply_params): the same candidate
    always lands in the same folder, and values that change nothing (a prune ratio where prune is
    dropped) make the same candidate, run and counted once."""
    return "c-" + stable_hash(recipe)[:10]


def make_sampler(spec: SearchSpec, worker: int) -> tuple[optuna.samplers.BaseSampler, str]:
    """The sampler and its name: a grid when asked for or (auto) when the grid fits the trial budget, else TPE.

    Every worker shuffles the grid alike (Optuna's grid sampler gives trial n grid point n, so workers
    sharing a study cover distinct points); TPE and random samplers are seeded apart per worker.
    """
    seed = spec.seed + 1000 * worker
    space = grid(spec)
    fits = space is not None and spec.budget.trials is not None and grid_size(space) <= spec.budget.trials
    if spec.sampler == "grid" or (spec.sampler == "auto" and fits):
        if space is None:
            raise RecipeError("sampler: grid needs every range of the space to have a step")
        return optuna.samplers.GridSampler(space, seed=spec.seed), f"grid ({grid_size(space)} points)"
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed), "random"
    startup = min(10, max(3, (spec.budget.trials or 30) // 3))
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True)
    return sampler, f"TPE ({startup} random start-up trials; constraints set per trial)"


def direction(spec: SearchSpec) -> str:
    return objective_key(spec)[1]


__all__ = ["Range", "candidate_id", "decode_params", "direction", "grid", "make_sampler", "suggest"]

"""Search specs: pydantic models of `compress search SPEC.yaml`, validated like recipes.

A spec names a base recipe (a path, or the recipe inline), the space of recipe values to try
(override paths as with `-o`, plus `drop_stages`), the constraints a candidate must meet, the
objective to optimise among those that do, and a budget. Every value of the space is checked
against the base recipe before anything runs, so a typo is one message, not a failed trial.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from compress.errors import RecipeError
from compress.recipe import (
    NAME_PATTERN, Recipe, apply_override, did_you_mean, format_validation_error, read_raw_recipe, validate_recipe,
)

DROP_STAGES = "drop_stages"
FIXED_PREFIXES = ("data", "eval", "seed", "name", "output_dir", "device")  # one dataset and protocol for all candidates

# objective name -> (manifest stage key, direction)
OBJECTIVES: dict[str, tuple[str, Literal["minimize", "maximize"]]] = {
    "p50": ("latency_p50_ms", "minimize"),
    "throughput": ("throughput_seq_per_s", "maximize"),
    "bytes": ("size_bytes", "minimize"),
}


class Range(BaseModel):
    """A numeric range: integers when low, high (and step) are integers, else floats."""

    model_config = ConfigDict(extra="forbid")

    low: int | float
    high: int | float
    step: int | float | None = Field(None, gt=0, description="Grid step (a range with a step can be a grid).")
    log: bool = Field(False, description="Sample on a log scale (no step).")

    @model_validator(mode="after")
    def _check(self) -> "Range":
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) is below low ({self.low})")
        if self.log and self.step is not None:
            raise ValueError("a log range takes no step")
        return self

    @property
    def integer(self) -> bool:
        return all(isinstance(v, int) for v in (self.low, self.high, self.step or 1))

    def grid(self) -> list[int | float] | None:
        """Every value of a stepped range (None without a step: only samplable)."""
        if self.step is None:
            return None if not self.integer else list(range(int(self.low), int(self.high) + 1))
        count = int(round((self.high - self.low) / self.step)) + 1
        values = [self.low + i * self.step for i in range(count)]
        return [int(v) for v in values] if self.integer else [round(float(v), 10) for v in values]


class Constraints(BaseModel):
    """What a candidate must keep: NDCG@10 on validation vs the teacher, and optional size / tail latency."""

    model_config = ConfigDict(extra="forbid")

    max_ndcg_drop: float = Field(gt=0, description="Largest NDCG@10 drop vs the teacher (upper end of the 95% CI).")
    drop: Literal["relative", "absolute"] = Field("relative", description="relative: a fraction of the teacher's NDCG@10.")
    max_size_mb: float | None = Field(None, gt=0, description="Largest artifact on disk (MiB).")
    max_p99_ms: float | None = Field(None, gt=0, description="Largest batch-1 p99 latency (ms).")


class Budget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    trials: int | None = Field(20, ge=1, description="Finished trials in the study (all workers together).")
    minutes: float | None = Field(None, gt=0, description="Wall time of this worker (stops after the running trial).")

    @model_validator(mode="after")
    def _some_limit(self) -> "Budget":
        if self.trials is None and self.minutes is None:
            raise ValueError("give trials, minutes or both")
        return self


class BootstrapConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resamples: int = Field(2000, ge=100, description="Bootstrap resamples of the validation users.")
    confidence: float = Field(0.95, gt=0, lt=1, description="Two-sided confidence of the interval.")


class SearchSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="Search folder: <output_dir>/<name>/.")
    recipe: Path | dict[str, Any] = Field(description="The base recipe: a YAML path, or the recipe inline.")
    set: list[str] = Field(default_factory=list, description="Overrides on the base recipe, as with -o.")
    output_dir: Path | None = Field(None, description="Where the search folder goes (default: the recipe's).")
    space: dict[str, list[Any] | Range] = Field(
        min_length=1, description="Recipe path (as with -o) -> choices (a list) or a range; `drop_stages` -> lists of stages."
    )
    constraints: Constraints
    objective: Literal["p50", "throughput", "bytes"] = Field("p50", description="What the pick optimises.")
    budget: Budget = Field(default_factory=Budget)
    sampler: Literal["auto", "tpe", "grid", "random"] = Field("auto", description="auto: grid when it fits the budget.")
    seed: int = Field(0, description="Sampler and bootstrap seed.")
    storage: str | None = Field(None, description="Optuna storage URL (default: a journal file in the search folder).")
    bootstrap: BootstrapConfig = Field(default_factory=BootstrapConfig)
    closest: int = Field(3, ge=1, description="How many closest candidates to keep when none passes.")
    settle: bool = Field(
        True, description="Re-time the passing candidates and the frontier in one bench session before answering "
        "(p50 / throughput objectives): trials are timed in their own sessions, cached ones in older ones."
    )

    @field_validator("space")
    @classmethod
    def _space_keys(cls, space: dict[str, Any]) -> dict[str, Any]:
        for key, value in space.items():
            if key.split(".")[0] in FIXED_PREFIXES:
                raise ValueError(f"{key}: data, eval, seed, name, output_dir and device are fixed for a search")
            if isinstance(value, list) and not value:
                raise ValueError(f"{key}: give at least one choice")
            if key == DROP_STAGES and not (isinstance(value, list) and all(isinstance(v, list) for v in value)):
                raise ValueError(f"{key}: a list of stage lists, e.g. [[], [prune]]")
        return space


def load_spec(path: Path, overrides: list[str] | None = None) -> tuple[SearchSpec, dict[str, Any]]:
    """Read and validate a spec, its base recipe and every value of its space; return (spec, base raw recipe)."""
    if not Path(path).is_file():
        raise RecipeError(f"search spec not found: {path}")
    raw = read_raw_recipe(path, overrides)  # YAML mapping + -o overrides, as for recipes
    source = str(path)
    try:
        spec = SearchSpec.model_validate(raw)
    except ValidationError as exc:
        raise RecipeError(f"{source} is invalid:\n{format_validation_error(exc)}") from None
    base = _base_recipe(spec, source)
    check_space(spec, base, source)
    return spec, base


def _base_recipe(spec: SearchSpec, source: str) -> dict[str, Any]:
    if isinstance(spec.recipe, dict):
        base = copy.deepcopy(spec.recipe)
        for override in spec.set:
            apply_override(base, override)
    else:
        base = read_raw_recipe(spec.recipe, spec.set)
    base.pop("ablation", None)
    validate_recipe(base, f"{source}: recipe")
    return base


def check_space(spec: SearchSpec, base: dict[str, Any], source: str) -> None:
    """Every value of the space must make a valid recipe, alone or with one value of another entry
    (e.g. `distill.num_layers: 1` with `distill.blocks: 1`); else a RecipeError naming the value."""
    stages = [stage.get("stage") for stage in base.get("stages", [])]
    values = {key: (value if isinstance(value, list) else [value.low, value.high]) for key, value in spec.space.items()}
    for key, choices in values.items():
        for choice in choices:
            if key == DROP_STAGES:
                unknown = sorted(set(choice) - set(stages))
                if unknown:
                    raise RecipeError(f"{source}: space.{key}: no stage named {unknown} in the recipe {stages}"
                                      f"{did_you_mean(unknown[0], stages)}")
            partners = [{other: c} for other, cs in values.items() if other != key for c in cs]
            if not any(_valid(apply_params(base, {key: choice, **partner})) for partner in partners):
                validate_recipe(apply_params(base, {key: choice}), f"{source}: space.{key}={json.dumps(choice)}")


def _valid(raw: dict[str, Any]) -> bool:
    try:
        validate_recipe(raw)
    except RecipeError:
        return False
    return True


def apply_params(base: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The base recipe with `params` (override path -> value; `drop_stages` -> stage names) applied."""
    raw = copy.deepcopy(base)
    for key, value in params.items():
        if key != DROP_STAGES:
            apply_override(raw, f"{key}={json.dumps(value)}")  # JSON is YAML: the value comes back as is
    dropped = set(params.get(DROP_STAGES) or [])
    raw["stages"] = [stage for stage in raw["stages"] if stage.get("stage") not in dropped]
    return raw


def keys_off_base(spec: SearchSpec, base: dict[str, Any]) -> list[str]:
    """Space keys none of whose values gives the base recipe back (e.g. a key the base leaves unset):
    with any of them, no candidate is the base recipe, so the pick cannot be compared with it.
    Ranges without a grid are not checked."""
    off = []
    for key, value in spec.space.items():
        choices = value if isinstance(value, list) else value.grid()
        if choices is not None and not any(apply_params(base, {key: choice}) == base for choice in choices):
            off.append(key)
    return off


def objective_key(spec: SearchSpec) -> tuple[str, Literal["minimize", "maximize"]]:
    return OBJECTIVES[spec.objective]


def needs_bench(spec: SearchSpec) -> bool:
    return spec.objective != "bytes" or spec.constraints.max_p99_ms is not None


def settles(spec: SearchSpec) -> bool:
    """Whether the answer waits for a one-session re-timing: only when speed decides it."""
    return spec.settle and needs_bench(spec)


def search_folder(spec: SearchSpec, base: Recipe) -> Path:
    return (spec.output_dir or base.output_dir) / spec.name

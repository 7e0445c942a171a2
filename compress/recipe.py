"""Recipes: pydantic models of a YAML pipeline, `-o key=value` overrides, readable errors."""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from compress.bench.config import BenchConfig
from compress.data.config import DataConfig
from compress.errors import RecipeError
from compress.evaluation.config import EvalConfig
from compress.stages.config import DistillConfig, TrainConfig
from compress.stages.registry import STAGES, spec_of

StageConfig = Annotated[Union[tuple(spec.config for spec in STAGES.values())], Field(discriminator="stage")]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class Variant(BaseModel):
    """One ablation variant: overrides on the recipe, and stages taken out of its chain."""

    model_config = ConfigDict(extra="forbid")

    set: list[str] = Field(default_factory=list, description="Overrides key.path=value, as with -o/--set.")
    drop_stages: list[str] = Field(default_factory=list, description="Stage names removed from the chain.")


class AblationConfig(BaseModel):
    """Variants of the recipe that `compress ablate` runs side by side (a plain list is `set:`)."""

    model_config = ConfigDict(extra="forbid")

    variants: dict[Annotated[str, Field(pattern=NAME_PATTERN)], Variant] = Field(
        min_length=1, description="Variant name (a folder name) -> its changes; [] is the recipe as is."
    )

    @field_validator("variants", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {name: {"set": v} if isinstance(v, list) else (v or {}) for name, v in value.items()}
        return value


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="Run name: the folder under output_dir.")
    seed: int = Field(0, description="Seed for data generation, initialisation and batching.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when present, else CPU.")
    output_dir: Path = Field(Path("artifacts"), description="Where run folders are written.")
    data: DataConfig = Field(default_factory=DataConfig, description="Dataset and preprocessing.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Evaluation protocol.")
    stages: list[StageConfig] = Field(min_length=1, description="Stages, run in order.")
    bench: BenchConfig = Field(default_factory=BenchConfig, description="Benchmark of every stage's artifact.")
    report: bool = Field(True, description="`compress run` ends by writing <run>/report/ (Markdown + HTML).")
    ablation: AblationConfig | None = Field(None, description="Variants for `compress ablate` (ignored by run).")

    @model_validator(mode="after")
    def _check_chain(self) -> "Recipe":
        produced = None
        for index, stage in enumerate(self.stages):
            spec = spec_of(stage)
            wanted = spec.accepts(stage)
            if wanted != produced:
                have = f"a {produced} model" if produced else "nothing (it is the first stage)"
                need = f"a {wanted} model" if wanted else "to be the first stage"
                raise ValueError(f"stages.{index} ({stage.stage}) needs {need}, but gets {have}")
            spec.check_chain(stage, index, self.stages)
            if stage.stage == "export" and (window := stage.max_len) is not None and window > self.data.max_len:
                raise ValueError(f"stages.{index} (export) max_len {window} is longer than data.max_len "
                                 f"{self.data.max_len}, the longest history the models see")
            produced = spec.produces(stage)
        return self


def load_recipe(path: Path, overrides: list[str] | None = None) -> Recipe:
    """Read, override and validate a recipe; every problem is a RecipeError naming the field."""
    return validate_recipe(read_raw_recipe(path, overrides), source=str(path))


def read_raw_recipe(path: Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """The recipe file as a dict with `overrides` applied, not yet validated."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path} is not valid YAML:\n{exc}") from None
    except UnicodeDecodeError:
        raise RecipeError(f"{path} is not a UTF-8 text file") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe is a YAML mapping (name, data, stages, ...)")
    for override in overrides or []:
        apply_override(raw, override)
    return raw


def with_loaded_teacher(raw: dict[str, Any], model: Path) -> dict[str, Any]:
    """The raw recipe with its teacher's `train` stage replaced by a `load` of `model` (a teacher trained
    elsewhere, e.g. from a pinned worktree: docs/reliability.md); the other stages are unchanged."""
    stages = raw.get("stages")
    if not isinstance(stages, list) or not stages or not isinstance(stages[0], dict) or stages[0].get("stage") != "train":
        first = stages[0].get("stage") if isinstance(stages, list) and stages and isinstance(stages[0], dict) else None
        raise RecipeError(f"a teacher to load replaces the recipe's first stage, `train`; this recipe starts with {first!r}")
    return {**raw, "stages": [{"stage": "load", "path": str(model)}, *stages[1:]]}


def validate_recipe(raw: dict[str, Any], source: str = "recipe") -> Recipe:
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as exc:
        raise RecipeError(f"{source} is invalid:\n{format_validation_error(exc)}") from None
    _check_files(recipe)
    return recipe


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Set `a.b.c=value` in `raw`; `value` is parsed as YAML. A list step is an index or a stage name."""
    key, sep, text = override.partition("=")
    if not sep or not key:
        raise RecipeError(f"override {override!r} is not key=value", "e.g. -o stages.train.epochs=3")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    node: Any = raw
    parts = key.split(".")
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(node, list):
            index = _list_index(node, part, key)
            if last:
                node[index] = value
            else:
                node = node[index]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            raise RecipeError(f"override {key!r}: {'.'.join(parts[:depth])} is not a mapping or list")


def _list_index(node: list[Any], part: str, key: str) -> int:
    if part.lstrip("-").isascii() and part.lstrip("-").isdigit():  # not "²", which isdigit() accepts
        index = int(part)
        if not -len(node) <= index < len(node):
            raise RecipeError(f"override {key!r}: index {index} is out of range (the list has {len(node)} entries)")
        return index
    names = [item.get("stage") for item in node if isinstance(item, dict)]
    matches = [i for i, item in enumerate(node) if isinstance(item, dict) and item.get("stage") == part]
    if not matches:
        listed = ", ".join(f"{name} ({i})" for i, name in enumerate(names)) or "none"
        raise RecipeError(f"override {key!r}: no stage named {part!r}{did_you_mean(part, names)}",
                          f"the recipe's stages (index): {listed}")
    if len(matches) > 1:
        raise RecipeError(f"override {key!r}: {len(matches)} stages are named {part!r} (ambiguous)",
                          f"use an index instead: {', '.join(f'stages.{i}' for i in matches)}")
    return matches[0]


def did_you_mean(word: Any, choices: Any) -> str:
    """'; did you mean 'x'?' for the closest of `choices` to `word` (difflib), or ''."""
    candidates = [str(choice) for choice in choices if choice is not None]
    close = difflib.get_close_matches(str(word), candidates, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _unwrap(annotation: Any) -> list[Any]:
    """The concrete types inside Annotated / Optional / Union."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return [t for arg in typing.get_args(annotation) for t in _unwrap(arg)]
    return [annotation]


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _step(annotation: Any, part: Any) -> Any:
    """The type one step (a field name, list index, dict key or union tag) below `annotation`, or None."""
    for candidate in _unwrap(annotation):
        origin = typing.get_origin(candidate)
        if origin in (list, tuple) and isinstance(part, int):
            return typing.get_args(candidate)[0]
        if origin is dict:
            return typing.get_args(candidate)[1]
        if _is_model(candidate) and isinstance(part, str):
            if part in candidate.model_fields:
                return candidate.model_fields[part].annotation
            stage = candidate.model_fields.get("stage")
            if stage is not None and stage.default == part:  # a discriminated union's tag in the location
                return candidate
    return None


def keys_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names accepted at `loc` (the location of one key) under `model`, or []."""
    try:
        annotation: Any = model
        for part in loc[:-1]:
            annotation = _step(annotation, part)
            if annotation is None:
                return []
        models = [t for t in _unwrap(annotation) if _is_model(t)]
        return list(models[0].model_fields) if len(models) == 1 else []
    except (IndexError, TypeError):  # an unusual annotation: no suggestion rather than a crash
        return []


def format_validation_error(
    exc: ValidationError, names: dict[str, str] | None = None, model: type[BaseModel] | None = None
) -> str:
    """One line per problem, naming the field (or, through `names`, the command-line option it came from).
    An unknown key or stage gets a "did you mean" from the fields of `model` (default: Recipe)."""
    model = model or (Recipe if exc.title == "Recipe" else None)
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        where = (names or {}).get(where, where)
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            suggestion = did_you_mean(error["loc"][-1], keys_at(model, tuple(error["loc"]))) if model and error["loc"] else ""
            message = f"unknown key{suggestion or ' (check its spelling and its place in the recipe)'}"
        elif error["type"] == "union_tag_invalid":
            context = error.get("ctx") or {}
            tags = [tag.strip().strip("'") for tag in str(context.get("expected_tags", "")).split(",")]
            tag = context.get("tag", error.get("input"))
            message = f"unknown {context.get('discriminator', 'tag').strip(chr(39))} {tag!r}{did_you_mean(tag, tags)} " \
                      f"(one of: {', '.join(tags)})"
        got = error.get("input")
        shown = ("" if error["type"] in ("extra_forbidden", "union_tag_invalid") or isinstance(got, (dict, list))
                 else f" (got {got!r})")
        lines.append(f"  - {where}: {message}{shown}")
    return "\n".join(lines)


def _check_files(recipe: Recipe) -> None:
    if recipe.data.source == "file" and Path(recipe.data.path).is_dir():
        raise RecipeError(f"data.path: {recipe.data.path} is a folder, not a file", "point it at the interactions file")
    if recipe.data.source == "file" and not Path(recipe.data.path).is_file():
        raise RecipeError(f"data.path: file not found: {recipe.data.path}", "paths are relative to the current folder")
    for index, stage in enumerate(recipe.stages):
        checkpoint = stage.init_from if isinstance(stage, (TrainConfig, DistillConfig)) else None
        if checkpoint is not None and not Path(checkpoint).is_dir():
            raise RecipeError(f"stages.{index}.init_from: folder not found: {checkpoint}")

"""Control rows beside a run, so a reader can tell what each compression step bought.

- `teacher-onnx`: the run's teacher exported to ONNX fp32 (the recipe's export settings), run by
  the same runtime as the student: runtime gains and compression gains are separated.
- `scratch`: the final student's exact shape (read from the model the run's last training stage
  wrote) trained from scratch with next-item cross-entropy alone, on the same data, for at least
  the epochs the student's training stages had together (distill + prune recovery), with the
  first distill stage's optimisation settings; then the run's deployment stages after that
  model (export, quantize), so its final row is comparable with the student's final row.
  A recipe that keeps the teacher's shape and compresses its item table (no distill or prune)
  gets a size-matched scratch instead: the teacher's own train stage at the widest width whose
  float model is no larger than the run's final artifact, then the same deployment stages:
  is a quantized table better than a narrower float model of the same bytes?
- `scratch-converged`: the `scratch` recipe again with a large epoch cap (max(CONVERGED_FACTOR x the
  student's budget, CONVERGED_MIN_EPOCHS)) and early stopping (the larger of the student's and the
  teacher's `patience`), so it stops when validation NDCG@10 stops improving, not when the budget
  runs out: with `scratch` it says whether the stack buys accuracy or only training time. Its epochs
  run, best epoch and training seconds are recorded beside the student's. One seed (the recipe's).
- seeds: the student's stages again under other training seeds, the teacher fixed (a `load`
  stage of the run's teacher), and the scratch control under the same seeds: mean ± std.

Each is a recipe derived from the run's recipe and run by the pipeline into a sibling folder
(`<run>-teacher-onnx`, `<run>-scratch`, `<run>-scratch-converged`, `<run>-seed<N>`,
`<run>-scratch-seed<N>`), so a
finished stage with the same id (the teacher) is reused through the stage cache. Then every
stage and control is ranked on the test users and its NDCG@10 difference to the teacher gets a
paired-bootstrap interval. `controls.json` in the run folder records all of it; the report reads it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from compress.data import load_data
from compress.errors import RecipeError
from compress.handlers import artifact_of_entry
from compress.evaluation.paired import ndcg_difference
from compress.models.config import ModelShape
from compress.pipeline import RunOptions, run_recipe
from compress.recipe import Recipe, validate_recipe
from compress.report.collect import CONTROLS_FILE
from compress.runs.files import CONFIG_FILE, read_json, write_json
from compress.runs.layout import read_manifest
from compress.training.config import OptimConfig

TRAINING_STAGES = ("distill", "prune")  # the student's own training: its epochs are the scratch budget
WIDTH_STEP = 8  # the size-matched scratch narrows the teacher in steps of this many hidden units
CONVERGED_FACTOR = 4  # scratch-converged may train this many times the student's epochs ...
CONVERGED_MIN_EPOCHS = 40  # ... and at least this many: the cap is not what stops it, early stopping is
CONVERGED = "scratch-converged"


@dataclass
class Budget:
    """A scratch control's epochs and where the student's budget came from."""

    epochs: int
    parts: dict[str, int]  # e.g. {"distill": 10, "prune recovery": 2}
    patience: int | None = None  # early stopping; None: the student's optimisation settings' own
    converged: bool = False  # scratch-converged: the cap is large, early stopping ends the training

    def describe(self) -> str:
        student = " + ".join(f"{name} {epochs}" for name, epochs in self.parts.items())
        total = sum(self.parts.values())
        stopping = "early stopping on validation NDCG@10"
        if self.converged:
            return (f"to convergence: {stopping} after {self.patience} evaluations without improvement, "
                    f"at most {self.epochs} epochs (the student's budget: {student} = {total})")
        extra = "" if self.epochs == total else f" (student's budget {total}, raised)"
        return f"at most {self.epochs} epochs = {student}{extra}, {stopping}"

    def as_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "student": self.parts,
                **({"patience": self.patience, "converged": True} if self.converged else {})}


@dataclass
class ControlRuns:
    """The sibling run folders made for a run's controls and seeds."""

    recipe: Recipe  # the run's own recipe
    run_dir: Path
    seeds: list[int]
    teacher_onnx: Path | None = None
    scratch: dict[int, Path] = field(default_factory=dict)  # seed -> run folder
    students: dict[int, Path] = field(default_factory=dict)  # seed -> run folder (the first seed: the run itself)
    budget: Budget | None = None
    converged: Path | None = None  # scratch-converged's run folder (the recipe's seed only)
    converged_budget: Budget | None = None
    notes: dict[str, str] = field(default_factory=dict)


def training_stage_indices(recipe: Recipe) -> list[int]:
    """Indices of the stages that make the student from the teacher (distill, prune)."""
    return [i for i, stage in enumerate(recipe.stages) if i > 0 and stage.stage in TRAINING_STAGES]


def student_budget(recipe: Recipe, epochs: int | None = None) -> Budget | None:
    """The student's training epochs (distill + prune recovery); None when the recipe trains no student."""
    parts: dict[str, int] = {}
    for index in training_stage_indices(recipe):
        stage = recipe.stages[index]
        if stage.stage == "distill":
            parts[_unique(parts, "distill")] = stage.epochs
        elif stage.recovery is not None:
            parts[_unique(parts, "prune recovery")] = stage.recovery.epochs
    if not sum(parts.values()):
        return None
    total = sum(parts.values())
    if epochs is not None and epochs < total:
        raise RecipeError(
            f"--scratch-epochs {epochs} is below the student's training budget ({total} epochs: "
            + ", ".join(f"{k} {v}" for k, v in parts.items()) + ")",
            "the scratch control trains at least as long as the student",
        )
    return Budget(epochs or total, parts)


def converged_budget(recipe: Recipe, budget: Budget, epochs: int | None = None) -> Budget:
    """scratch-converged's budget: at most `epochs` (default max(CONVERGED_FACTOR x the student's,
    CONVERGED_MIN_EPOCHS)), stopped by early stopping with the larger of the student's and the teacher's
    patience (the default patience when both are 0, "never stop")."""
    total = sum(budget.parts.values())
    cap = epochs if epochs is not None else max(CONVERGED_FACTOR * total, CONVERGED_MIN_EPOCHS)
    if cap < budget.epochs:
        raise RecipeError(
            f"--converged-epochs {cap} is below the scratch control's {budget.epochs} epochs",
            "scratch-converged trains at least as long as scratch",
        )
    first = recipe.stages[0]
    teacher = first.patience if first.stage == "train" else 0  # a loaded teacher: no from-scratch setting
    patience = max(student_optim(recipe)["patience"], teacher) or OptimConfig().patience
    return Budget(cap, dict(budget.parts), patience, converged=True)


def _unique(parts: dict[str, int], name: str) -> str:
    return name if name not in parts else f"{name} {sum(k.startswith(name) for k in parts) + 1}"


def student_optim(recipe: Recipe) -> dict[str, Any]:
    """The optimisation settings the scratch control trains with: the first distill stage's, else prune recovery's."""
    for index in training_stage_indices(recipe):
        stage = recipe.stages[index]
        source = stage if stage.stage == "distill" else getattr(stage, "recovery", None)
        if source is not None:
            return {key: getattr(source, key) for key in OptimConfig.model_fields}
    return OptimConfig().model_dump()


def student_shape(run_dir: Path, manifest: dict[str, Any], index: int) -> dict[str, Any]:
    """The architecture (ModelShape fields) of the model stage `index` of the run wrote."""
    config = read_json(Path(run_dir) / manifest["stages"][index]["output"] / CONFIG_FILE)
    return {key: config[key] for key in ModelShape.model_fields if key in config}


def derived_raw(recipe: Recipe, name: str, stages: list[dict[str, Any]], seed: int | None = None) -> dict[str, Any]:
    """The recipe with other stages, another name and (optionally) another training seed; data fixed, bench off."""
    raw = copy.deepcopy(recipe.model_dump(mode="json", exclude={"ablation"}))
    raw.update(name=name, stages=stages)
    raw["bench"]["enabled"] = False  # the caller times the finals in its own session
    if seed is not None:
        if raw["data"]["source"] == "synthetic" and raw["data"]["synthetic"].get("seed") is None:
            raw["data"]["synthetic"]["seed"] = recipe.seed  # the same synthetic data under another training seed
        raw["seed"] = seed
    return raw


def teacher_onnx_raw(recipe: Recipe) -> dict[str, Any]:
    """The teacher stage, then the recipe's first export stage (defaults when it has none)."""
    export = next((s.model_dump(mode="json") for s in recipe.stages if s.stage == "export"), {"stage": "export"})
    return derived_raw(recipe, f"{recipe.name}-teacher-onnx", [recipe.stages[0].model_dump(mode="json"), export])


def scratch_raw(
    recipe: Recipe, run_dir: Path, manifest: dict[str, Any], budget: Budget, seed: int
) -> dict[str, Any]:
    """Train the last training stage's model shape from scratch (CE only), then the stages after it
    (a converged budget: the `scratch-converged` control, same recipe, its own cap and patience)."""
    last = training_stage_indices(recipe)[-1]
    train = {"stage": "train", "model": student_shape(run_dir, manifest, last), **student_optim(recipe), "epochs": budget.epochs}
    if budget.patience is not None:
        train["patience"] = budget.patience
    name = _scratch_name(recipe, seed, CONVERGED if budget.converged else "scratch")
    return derived_raw(recipe, name, [train, *_stages_after(recipe, last)], seed)


def _scratch_name(recipe: Recipe, seed: int, control: str = "scratch") -> str:
    return f"{recipe.name}-{control}" if seed == recipe.seed else f"{recipe.name}-{control}-seed{seed}"


def _stages_after(recipe: Recipe, index: int) -> list[dict[str, Any]]:
    """The recipe's stages after `index` (the deployment stages a control runs too), as raw dicts."""
    return [stage.model_dump(mode="json") for stage in recipe.stages[index + 1:]]


def table_stage_index(recipe: Recipe) -> int | None:
    """The index of the recipe's item-table stage when it is the only compression of the model's
    shape (no distill or prune), else None."""
    if training_stage_indices(recipe):
        return None
    return next((i for i, stage in enumerate(recipe.stages) if i > 0 and stage.stage == "item_table"), None)


def narrower_shape(shape: dict[str, Any], width: int) -> dict[str, Any]:
    """The shape at hidden (and item table) width `width`: head and MLP widths scaled alike, heads kept."""
    scale = width / shape["hidden_size"]
    return {
        **shape, "hidden_size": width, "item_dim": width,
        "head_dim": max(1, round(shape["head_dim"] * scale)),
        "intermediate_size": max(1, round(shape["intermediate_size"] * scale)),
    }


def size_matched_shape(teacher: dict[str, Any], num_items: int, max_len: int, max_bytes: int) -> dict[str, Any] | None:
    """The widest narrowing of the teacher's shape (steps of WIDTH_STEP) whose float32 parameters take at
    most `max_bytes`; None when even the narrowest does not fit."""
    from compress.models.config import RecommenderConfig
    from compress.models.recommender import SequentialRecommender

    shape = {key: teacher[key] for key in ModelShape.model_fields if key in teacher}
    shape = ModelShape(**shape).model_dump()  # derived widths filled in
    for width in range(shape["hidden_size"] - WIDTH_STEP, WIDTH_STEP - 1, -WIDTH_STEP):
        candidate = narrower_shape(shape, width)
        config = RecommenderConfig(**candidate, num_items=num_items, max_len=max_len)
        if 4 * SequentialRecommender(config).num_parameters() <= max_bytes:
            return candidate
    return None


def size_matched_raw(
    recipe: Recipe, run_dir: Path, manifest: dict[str, Any], seed: int
) -> tuple[dict[str, Any] | None, str]:
    """The teacher's train stage at the widest width whose float model fits in the run's final artifact,
    then the stages after the item-table stage; (None, why) when it cannot be built."""
    train = recipe.stages[0]
    if train.stage != "train":
        return None, "not run: the teacher was loaded, so there is no train stage to repeat at a smaller width"
    teacher = read_json(Path(run_dir) / manifest["stages"][0]["output"] / CONFIG_FILE)
    final_bytes = int(manifest["stages"][-1]["size_bytes"])
    shape = size_matched_shape(teacher, teacher["num_items"], teacher["max_len"], final_bytes)
    if shape is None:
        return None, f"not run: no width of the teacher's shape fits in the final artifact's {final_bytes:,} bytes"
    stages = [{**train.model_dump(mode="json"), "model": shape}, *_stages_after(recipe, table_stage_index(recipe))]
    why = (
        f"size-matched: the teacher's train stage ({train.epochs} epochs, early stopping on validation NDCG@10) "
        f"at hidden and item width {shape['hidden_size']} instead of {teacher['hidden_size']}, the widest whose "
        f"float32 parameters fit in the final artifact's {final_bytes:,} bytes, then the same deployment stages"
    )
    return derived_raw(recipe, _scratch_name(recipe, seed), stages, seed), why


def seed_raw(recipe: Recipe, run_dir: Path, manifest: dict[str, Any], seed: int) -> dict[str, Any]:
    """The run's student stages under another training seed, starting from the run's teacher (`load`)."""
    teacher = {"stage": "load", "path": str(Path(run_dir) / manifest["stages"][0]["output"])}
    stages = [teacher, *(stage.model_dump(mode="json") for stage in recipe.stages[1:])]
    return derived_raw(recipe, f"{recipe.name}-seed{seed}", stages, seed)


def run_controls(
    recipe: Recipe,
    options: RunOptions,
    seeds: int = 3,
    scratch_epochs: int | None = None,
    converged: bool = True,
    converged_epochs: int | None = None,
) -> ControlRuns:
    """Run the recipe (if not done), its controls and its extra seeds through the pipeline; return the folders.
    With `converged`, a shape-matched scratch control also runs to convergence (`scratch-converged`)."""
    if seeds < 1:
        raise RecipeError(f"--seeds must be at least 1, got {seeds}")
    budget = student_budget(recipe, scratch_epochs)  # checked before anything runs
    long_budget = converged_budget(recipe, budget, converged_epochs) if converged and budget else None
    run_dir = recipe.output_dir / recipe.name
    manifest = run_recipe(recipe, options)
    seed_list = [recipe.seed + offset for offset in range(seeds)]
    runs = ControlRuns(recipe, run_dir, seed_list, budget=budget, students={recipe.seed: run_dir})

    def run(raw: dict[str, Any], what: str) -> Path:
        derived = validate_recipe(raw, f"{what} of {recipe.name}")
        options.log(f"== {what} -> {derived.output_dir / derived.name}")
        run_recipe(derived, options)
        return derived.output_dir / derived.name

    runs.teacher_onnx = run(teacher_onnx_raw(recipe), "control teacher-onnx")
    runs.notes["teacher-onnx"] = "the teacher exported to ONNX fp32, run by onnxruntime like the student"
    if budget is None and table_stage_index(recipe) is not None:
        for seed in seed_list:
            raw, why = size_matched_raw(recipe, run_dir, manifest, seed)
            if raw is None:
                break
            runs.scratch[seed] = run(raw, f"control scratch, size-matched (seed {seed})")
        runs.notes["scratch"] = why
    elif budget is None:
        runs.notes["scratch"] = "not run: the recipe trains no student (no distill, prune or item-table stage)"
    else:
        for seed in seed_list:
            runs.scratch[seed] = run(scratch_raw(recipe, run_dir, manifest, budget, seed), f"control scratch (seed {seed})")
        runs.notes["scratch"] = (
            "the final student's shape trained from scratch with cross-entropy alone, "
            f"{budget.describe()}, then the same deployment stages"
        )
    if long_budget is not None:
        runs.converged_budget = long_budget
        runs.converged = run(scratch_raw(recipe, run_dir, manifest, long_budget, recipe.seed),
                             f"control {CONVERGED} (seed {recipe.seed})")
        runs.notes[CONVERGED] = (
            "the scratch control's recipe trained " + long_budget.describe()
            + f", seed {recipe.seed} only, then the same deployment stages"
        )
    elif converged:
        runs.notes[CONVERGED] = (
            "not run: the size-matched scratch is already the teacher's own train stage, early stopping included"
            if runs.scratch else "not run: there is no scratch control to train longer"
        )
    for seed in seed_list[1:]:
        runs.students[seed] = run(seed_raw(recipe, run_dir, manifest, seed), f"student seed {seed}")
    return runs


def paired_differences(
    runs: ControlRuns, device: str | torch.device = "cpu", log: Callable[[str], None] = print
) -> dict[str, Any]:
    """NDCG@10 difference to the teacher (paired bootstrap over test users, seed 0, 95%) of every stage
    of the run and of each control's final stage, and of the final stage to the scratch control."""
    manifest, recipe = read_manifest(runs.run_dir), runs.recipe
    data = load_data(recipe.data, recipe.seed)
    device = torch.device(device)

    def ranks(run_dir: Path, entry: dict[str, Any]):
        log(f"paired: ranking the test users with {run_dir.name}/{entry['output']}")
        return artifact_of_entry(run_dir, entry).ranks(data, recipe.eval, device)

    teacher = ranks(runs.run_dir, manifest["stages"][0])
    stages = {entry["name"]: ranks(runs.run_dir, entry) for entry in manifest["stages"][1:]}
    controls = {}
    for name, folder in (
        ("teacher-onnx", runs.teacher_onnx), ("scratch", runs.scratch.get(recipe.seed)), (CONVERGED, runs.converged)
    ):
        if folder is not None:
            controls[name] = ranks(folder, read_manifest(folder)["stages"][-1])
    out: dict[str, Any] = {
        "metric": "ndcg@10",
        "reference": manifest["stages"][0]["name"],
        "users": int(len(teacher)),
        "stages": {name: ndcg_difference(r, teacher).as_dict() for name, r in stages.items()},
        "controls": {name: ndcg_difference(r, teacher).as_dict() for name, r in controls.items()},
    }
    final = manifest["stages"][-1]["name"]
    for name, key in (("scratch", "final_vs_scratch"), (CONVERGED, "final_vs_scratch_converged")):
        if name in controls and stages:
            out[key] = {"stage": final, **ndcg_difference(stages[final], controls[name]).as_dict()}
    return out


def training_time(run_dir: Path, indices: list[int] | None = None) -> dict[str, Any]:
    """Epochs run and training seconds of a run's stages `indices` (default: its first, a scratch
    control's train stage), summed: what a model cost to train, read from the manifest's stage info.
    A prune stage counts its recovery; `best_epoch` is given for a single stage."""
    stages = read_manifest(run_dir)["stages"]
    chosen = [stages[i] for i in (indices if indices is not None else [0])]
    epochs = seconds = 0.0
    for entry in chosen:
        info = entry.get("info", {})
        epochs += info.get("epochs_run", info.get("recovery_epochs_run", 0))
        seconds += info.get("train_seconds", info.get("recovery_seconds", 0.0))
    out: dict[str, Any] = {"stages": [entry["name"] for entry in chosen], "epochs_run": int(epochs),
                           "train_seconds": round(seconds, 2)}
    if len(chosen) == 1 and "best_epoch" in chosen[0].get("info", {}):
        out["best_epoch"] = chosen[0]["info"]["best_epoch"]
    return out


def write_controls(runs: ControlRuns, paired: dict[str, Any] | None) -> Path:
    """Record the controls, seeds and paired differences in `<run>/controls.json` (read by the report)."""
    manifest = read_manifest(runs.run_dir)
    controls = []
    training: dict[str, Any] = {}
    if runs.budget is not None:  # the student's own training: distill + prune recovery
        training["student"] = training_time(runs.run_dir, training_stage_indices(runs.recipe))
    if runs.scratch:
        scratch = runs.scratch[runs.seeds[0]]
        training["scratch"] = training_time(scratch)
        controls.append({
            "name": "scratch", "run": scratch.name, "note": runs.notes["scratch"],
            "budget": runs.budget.as_dict() if runs.budget else None, "training": training["scratch"],
        })
    if runs.converged is not None:
        training[CONVERGED] = training_time(runs.converged)
        controls.append({
            "name": CONVERGED, "run": runs.converged.name, "note": runs.notes[CONVERGED],
            "budget": runs.converged_budget.as_dict(), "training": training[CONVERGED],
        })
    if runs.teacher_onnx is not None:
        controls.append({"name": "teacher-onnx", "run": runs.teacher_onnx.name, "note": runs.notes["teacher-onnx"]})
    record = {
        "run": manifest["name"],
        "stage_ids": [entry["config_hash"] for entry in manifest["stages"]],  # the run these controls belong to
        "controls": controls,
        "skipped": {k: v for k, v in runs.notes.items() if v.startswith("not run")},
        "seeds": {
            "seeds": runs.seeds,
            "students": {str(seed): folder.name for seed, folder in runs.students.items()},
            "scratch": {str(seed): folder.name for seed, folder in runs.scratch.items()},
        },
        "paired": paired,
        "training": training,
    }
    path = runs.run_dir / CONTROLS_FILE
    write_json(path, record)
    return path

"""`compress ablate`: run a recipe's ablation variants as separate runs and compare them in one report.

Each variant is the recipe with its `set:` overrides applied and its `drop_stages` removed, run
as `<output_dir>/<name>-<variant>/`. Variants share finished stages through the pipeline's
content-addressed cache (a stage with the same id in a sibling run folder is linked in, not rerun),
so e.g. a teacher common to all variants trains once.

The variants run with their per-stage benchmark off; then one bench session times every variant's
final stage and each distinct teacher, round by round, and each final stage's NDCG@10 difference to
the first variant gets a paired-bootstrap interval (compress/studies/compare.py).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compress.errors import RecipeError
from compress.recipe import Recipe, Variant, apply_override, did_you_mean, read_raw_recipe, validate_recipe

if TYPE_CHECKING:  # the pipeline (torch) is imported when variants run, so planning reports mistakes fast
    from compress.pipeline import RunOptions
    from compress.report import ReportFiles


@dataclass
class PlannedVariant:
    name: str
    changes: str  # e.g. "stages.distill.weights.kd=0; drop prune"
    recipe: Recipe


@dataclass
class AblationResult:
    runs: dict[str, Path]  # variant name -> run folder
    report: ReportFiles
    session: str = ""  # the bench session that timed every final stage
    differences: dict[str, dict | None] | None = None  # variant -> NDCG@10 minus the first variant's


def plan_variants(raw: dict[str, Any], source: str = "recipe") -> tuple[Recipe, list[PlannedVariant]]:
    """Validate the recipe and every variant of its `ablation` section, before anything runs."""
    recipe = validate_recipe(raw, source)
    if recipe.ablation is None:
        raise RecipeError(f"{source} has no `ablation:` section", "add ablation: {variants: {base: [], ...}}")
    planned = [
        PlannedVariant(
            name,
            "; ".join([*variant.set, *(f"drop {stage}" for stage in variant.drop_stages)]),
            validate_recipe(_variant_raw(raw, recipe.name, name, variant), f"{source} (variant {name})"),
        )
        for name, variant in recipe.ablation.variants.items()
    ]
    return recipe, planned


def _variant_raw(raw: dict[str, Any], base_name: str, name: str, variant: Variant) -> dict[str, Any]:
    out = copy.deepcopy({k: v for k, v in raw.items() if k != "ablation"})
    out["name"] = f"{base_name}-{name}"
    out.setdefault("bench", {})["enabled"] = False  # timed together afterwards, in one session
    for override in variant.set:
        apply_override(out, override)
    present = [stage.get("stage") for stage in out.get("stages", [])]
    unknown = sorted(set(variant.drop_stages) - set(present))
    if unknown:
        raise RecipeError(f"ablation.variants.{name}.drop_stages: no stage named {unknown[0]!r} in the recipe"
                          f"{did_you_mean(unknown[0], present)} (its stages: {', '.join(map(str, present))})")
    out["stages"] = [stage for stage in out["stages"] if stage.get("stage") not in variant.drop_stages]
    return out


def run_ablation(path: Path, overrides: list[str], options: RunOptions, out: Path | None = None) -> AblationResult:
    """Run every variant of the recipe at `path`, time and compare their final stages, then write the
    comparison report (default `<output_dir>/<name>-ablation`)."""
    from compress.studies.compare import bench_finals, final_differences
    from compress.pipeline import run_recipe
    from compress.report import build_report

    base, planned = plan_variants(read_raw_recipe(path, overrides), str(path))
    runs: dict[str, Path] = {}
    for variant in planned:
        runs[variant.name] = variant.recipe.output_dir / variant.recipe.name
        options.log(f"== variant {variant.name} -> {runs[variant.name]}")
        run_recipe(variant.recipe, options)
    session = bench_finals(base, runs, options.log) if base.bench.enabled else None
    differences = final_differences(base, runs, options.log)
    report = build_report(
        list(runs.values()),
        out or base.output_dir / f"{base.name}-ablation",
        [(variant.name, variant.changes) for variant in planned],
        title=f"ablation: {base.name}",
        differences=differences,
        session=session,
    )
    return AblationResult(runs, report, session or "", differences)

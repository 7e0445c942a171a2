"""`compress ablate`: run a recipe's ablation variants as separate runs and compare them in one report.

Each variant is the recipe with its `set:` overrides applied and its `drop_stages` removed, run
as `<output_dir>/<name>-<variant>/`. Variants share finished stages through the pipeline's
content-addressed cache (a stage with the same id in a sibling run folder is linked in, not rerun),
so e.g. a teacher common to all variants trains once.

The variants run with their per-stage benchmark off; then one bench session times every variant's
final stage and each distinct teacher, round by round (at least 3 rounds: every teacher, then every
final stage, in each), so their latencies compare within one process and the spread between rounds
says which differences are noise. Each variant's final stage is ranked on the test users and its
NDCG@10 difference to the first variant gets a paired-bootstrap interval.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from compress.bench import BENCH_FILE, TEACHER_PREFIX, BenchSession, bench_interleaved, summary
from compress.data import load_data
from compress.errors import RecipeError
from compress.evaluation.paired import artifact_ranks, ndcg_difference
from compress.pipeline import RunOptions, run_recipe
from compress.runs.artifacts import write_json
from compress.runs.layout import MANIFEST_FILE, read_manifest, stage_folder
from compress.runtime.environment import resolve_device
from compress.stages.base import Artifact
from compress.recipe import Recipe, Variant, apply_override, read_raw_recipe, validate_recipe
from compress.report import ReportFiles, build_report


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
    unknown = set(variant.drop_stages) - {stage.get("stage") for stage in out.get("stages", [])}
    if unknown:
        raise RecipeError(f"ablation.variants.{name}.drop_stages: no stage named {sorted(unknown)} in the recipe")
    out["stages"] = [stage for stage in out["stages"] if stage.get("stage") not in variant.drop_stages]
    return out


MIN_ROUNDS = 3  # rounds the ablation's bench session takes at least: the spread between them is the noise


def run_ablation(path: Path, overrides: list[str], options: RunOptions, out: Path | None = None) -> AblationResult:
    """Run every variant of the recipe at `path`, time and compare their final stages, then write the
    comparison report (default `<output_dir>/<name>-ablation`)."""
    base, planned = plan_variants(read_raw_recipe(path, overrides), str(path))
    runs: dict[str, Path] = {}
    for variant in planned:
        runs[variant.name] = variant.recipe.output_dir / variant.recipe.name
        options.log(f"== variant {variant.name} -> {runs[variant.name]}")
        run_recipe(variant.recipe, options)
    session = bench_finals(base, runs, options.log) if base.bench.enabled else None
    differences = variant_differences(base, runs, options.log)
    report = build_report(
        list(runs.values()),
        out or base.output_dir / f"{base.name}-ablation",
        [(variant.name, variant.changes) for variant in planned],
        title=f"ablation: {base.name}",
        differences=differences,
        session=session,
    )
    return AblationResult(runs, report, session or "", differences)


def bench_finals(recipe: Recipe, runs: dict[str, Path], log: Callable[[str], None] = print) -> str:
    """Time every variant's final stage and each distinct teacher in one bench session (interleaved
    rounds, at least MIN_ROUNDS); write their bench.json files and manifests; return the session id."""
    device = resolve_device(recipe.device)
    data = load_data(recipe.data, recipe.seed)
    config = recipe.bench.model_copy(update={"rounds": max(recipe.bench.rounds, MIN_ROUNDS)})
    session = BenchSession(config, device, data, recipe.data.max_len, log)
    manifests = {name: read_manifest(folder) for name, folder in runs.items()}
    finals: dict[str, Artifact] = {}
    teachers: dict[str, Artifact] = {}
    teacher_of: dict[str, str] = {}
    by_stage: dict[str, Artifact] = {}  # stage cache id -> the one artifact measured for it
    for name, manifest in manifests.items():
        first, last = manifest["stages"][0], manifest["stages"][-1]
        teachers.setdefault(first["config_hash"], Artifact(runs[name] / first["output"], first["kind"]))
        by_stage.setdefault(first["config_hash"], teachers[first["config_hash"]])
        teacher_of[name] = first["config_hash"]
        finals[name] = by_stage.setdefault(last["config_hash"], Artifact(runs[name] / last["output"], last["kind"]))
    distinct = {artifact.path for artifact in finals.values()}
    log(f"bench: {len(distinct)} distinct final stage(s) of {len(finals)} variant(s) and {len(teachers)} teacher(s) "
        f"in one session, {config.rounds} rounds")
    results = bench_interleaved(session, finals, teacher_of, teachers, config.rounds)
    for name, manifest in manifests.items():
        folder, key = runs[name], teacher_of[name]
        timed = [(manifest["stages"][-1], results[name])]
        if len(manifest["stages"]) > 1:  # the teacher's own numbers in this session
            timed.insert(0, (manifest["stages"][0], results[TEACHER_PREFIX + key]))
        for entry, result in timed:
            record = {"artifact": entry["output"], **result}
            record["reference"] = {"artifact": os.path.relpath(teachers[key].path, folder), **result["reference"]}
            write_json(stage_folder(folder, entry) / BENCH_FILE, record)
            entry["bench"] = summary(record)
        write_json(folder / MANIFEST_FILE, manifest)
    return session.id


def variant_differences(
    recipe: Recipe, runs: dict[str, Path], log: Callable[[str], None] = print
) -> dict[str, dict | None]:
    """Each variant's final stage minus the first variant's: NDCG@10 on the same test users, paired bootstrap
    (None for a variant whose data differs, e.g. another filter, so its users cannot be paired)."""
    manifests = {name: read_manifest(folder) for name, folder in runs.items()}
    names = list(runs)
    reference = manifests[names[0]]
    data = load_data(recipe.data, recipe.seed)
    device = resolve_device(recipe.device)

    cache: dict[str, Any] = {}  # stage cache id -> ranks: a final stage shared by variants is ranked once

    def ranks(name: str) -> Any:
        last = manifests[name]["stages"][-1]
        if last["config_hash"] not in cache:
            log(f"paired: ranking the test users with variant {name} ({last['output']})")
            cache[last["config_hash"]] = artifact_ranks(runs[name] / last["output"], last["kind"], data, recipe.eval, device)
        return cache[last["config_hash"]]

    base = ranks(names[0])
    out: dict[str, dict | None] = {names[0]: None}
    for name in names[1:]:
        same = manifests[name]["data"]["fingerprint"] == reference["data"]["fingerprint"]
        same = same and manifests[name]["recipe"]["eval"] == reference["recipe"]["eval"]
        out[name] = ndcg_difference(ranks(name), base).as_dict() if same else None
    return out

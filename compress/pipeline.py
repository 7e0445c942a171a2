"""Runs a recipe's stages in order: cache by content hash, evaluate each output, keep a manifest.

A stage's id hashes its name, its config, its input's id (the data fingerprint for the first
stage), the evaluation settings, what else the stage reads (e.g. an init_from checkpoint's
contents), the package's source (compress/runs/code_version.py: editing a loss reruns the
stages) and the library versions. A stage folder whose `stage.json`
holds the same id is reused ("cached"); `stage.json` is written last, so a folder without it
is unfinished and is redone (training resumes from its checkpoint when the id matches).
The cache is content-addressed across runs too: a finished stage with the same id in a sibling
run folder (same `output_dir`, e.g. another ablation variant) is hard-linked in and reused; when
a sibling run is training that very stage right now (its folder holds the id in `pending.json`
and its run lock a live process), this run waits for it and reuses the result instead of training
it twice (search workers and parallel ablations starting together; single-process runs only).

With `bench.enabled`, every stage's artifact is benchmarked after evaluation (`bench.json`
beside `metrics.json`, a summary in the manifest entry); one BenchSession serves the whole
run, so the teacher is re-measured in this process before any ratio is computed.

Under torchrun every rank runs this loop on the same data: the training stages run on all
ranks (data parallel, see compress/runtime/distributed.py); rank 0 alone writes folders, logs and the
manifest, runs the other stages, evaluates and benchmarks, and broadcasts each stage's entry.
"""

from __future__ import annotations

import json
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager

import numpy as np
import torch

from compress.runtime import distributed
from compress.runs.code_version import code_fingerprint
from compress.runs.files import dir_size_bytes, link_or_copy, read_json, stable_hash, write_json
from compress.bench.runs import bench_stage
from compress.bench.session import BenchSession
from compress.data import load_data
from compress.data.sequences import SequenceData
from compress.runtime.environment import describe_device, resolve_device, versions
from compress.evaluation.metrics import evaluate_popularity
from compress.errors import ArtifactError
from compress.runs.failures import resource_errors
from compress.runs.integrity import clear_unfinished, verify_folder, write_file_list
from compress.runs.locking import LOCK_FILE, holder_alive, read_lock, run_lock
from compress.recipe import Recipe
from compress.runs.layout import ITEM_IDS_FILE, LOG_FILE, MANIFEST_FILE
from compress.runs.stage_log import stage_logger, warnings_to_log
from compress.stages.registry import spec_of
from compress.handlers import Artifact, artifact_of_entry
from compress.stages.base import CHECKPOINT_FILE, StageContext
from compress.stages.runners import run_stage

STAGE_FILE = "stage.json"
PENDING_FILE = "pending.json"
SIBLING_POLL_S = 2.0  # how often a run waiting for a sibling's stage looks again


@dataclass
class RunOptions:
    force: bool = False
    show_progress: bool = True
    log: Callable[[str], None] = print
    show_warnings: bool = False  # library warnings on the terminal too (--debug); always in the stage's log.txt


def run_recipe(recipe: Recipe, options: RunOptions, data: SequenceData | None = None) -> dict[str, Any]:
    """Run every stage of `recipe`, holding the run folder's lock (rank 0); return the manifest (also written there).

    `data`: the recipe's data when already loaded (the CLI reads it before importing torch).
    """
    device = distributed.setup(resolve_device(recipe.device))
    run_dir = recipe.output_dir / recipe.name
    if not distributed.is_main():  # rank 0 holds the lock for the whole group
        return _run_locked(recipe, options, run_dir, device, data)
    with run_lock(run_dir, options.log), resource_errors(f"run {recipe.name}", run_dir):
        return _run_locked(recipe, options, run_dir, device, data)


def _run_locked(
    recipe: Recipe, options: RunOptions, run_dir: Path, device: torch.device, data: SequenceData | None
) -> dict[str, Any]:
    main = distributed.is_main()
    log = options.log if main else _silent
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)

    data = data if data is not None else load_data(recipe.data, recipe.seed)
    started = time.perf_counter() - data.load_seconds  # the run's time includes reading the data
    fingerprint = data.fingerprint()
    log(f"data: {data.num_users:,} users, {data.num_items:,} items, fingerprint {fingerprint} "
        f"({data.load_seconds:.1f}s)")
    for note in data.notes():
        log(f"data: {note}")
    if distributed.active():
        log(f"data parallel: {distributed.world_size()} processes ({distributed.backend()})")
    if main:
        write_json(run_dir / ITEM_IDS_FILE, [_plain(i) for i in data.item_ids])
    baseline = distributed.on_main(evaluate_popularity, data, "test", recipe.eval, recipe.data.max_len)
    manifest: dict[str, Any] = {
        "name": recipe.name,
        "recipe": recipe.model_dump(mode="json"),
        "data": {"fingerprint": fingerprint, "stats": data.stats(), "seconds": round(time.perf_counter() - started, 2),
                 "path": str(Path(recipe.data.path).resolve()) if recipe.data.source == "file" else None},
        "versions": versions(),
        "environment": describe_device(device),
        "baseline": {"name": "popularity", "metrics": baseline},
        "stages": [],
    }
    if distributed.active():
        manifest["environment"]["processes"] = distributed.world_size()
    previous = _previous_entries(run_dir) if main else []
    save = _manifest_writer(run_dir, manifest, previous) if main else (lambda reached: None)
    save(-1)
    bench = BenchSession(recipe.bench, device, data, recipe.data.max_len, log) if recipe.bench.enabled and main else None

    input_id, source, teacher = fingerprint, None, None
    for index, config in enumerate(recipe.stages):
        folder = run_dir / f"{index + 1:02d}-{config.stage}"
        identity = {
            "stage": config.stage,
            "config": config.model_dump(mode="json"),
            "input": input_id,
            "eval": recipe.eval.model_dump(mode="json", exclude={"item_chunk"}),  # memory only, same metrics
            "max_len": recipe.data.max_len,
            "seed": recipe.seed,
            "code": code_fingerprint(),
            "versions": manifest["versions"],
        }
        if (content := spec_of(config).content_id(config)) is not None:
            identity["content"] = content
        config_hash = stable_hash(identity)
        wait = not distributed.active()  # under torchrun the other ranks would time out in the broadcast
        found = None if options.force else distributed.on_main(_find_cached, folder, config_hash, log, wait)
        entry, origin = found or (None, None)
        if entry is not None:
            log(f"[{index + 1}/{len(recipe.stages)}] {config.stage}: cached ({origin})")
        else:
            distributed.on_main(_prepare_folder, folder, config_hash, options.force)
            save(index)  # the last run's entry for this folder is gone with its files
            log(f"[{index + 1}/{len(recipe.stages)}] {config.stage}: running -> {folder}")
            ctx = StageContext(
                data=data,
                max_len=recipe.data.max_len,
                eval_config=recipe.eval,
                device=device,
                seed=recipe.seed,
                folder=folder,
                log=stage_logger(folder, log) if main else _silent,
                show_progress=options.show_progress and main,
            )
            with resource_errors(f"stage {folder.name}", folder, device), _quiet(folder, main, options):
                if not main and spec_of(config).data_parallel:
                    torch.manual_seed(ctx.seed)  # as _run_stage does on rank 0
                    run_stage(ctx, config, source)  # this rank's part of the training; rank 0 saves
                entry = distributed.on_main(_run_stage, ctx, config, source, config_hash, index)
        source = artifact_of_entry(run_dir, entry)
        teacher = teacher or source
        if bench is not None:
            with resource_errors(f"benchmark of stage {folder.name}", folder, device), _quiet(folder, main, options):
                entry = {**entry, "bench": bench_stage(bench, run_dir, entry, teacher, reuse=origin is not None)}
        manifest["stages"].append(entry)
        save(index)
        input_id = config_hash

    manifest["seconds"] = round(time.perf_counter() - started, 2)
    if main:
        write_json(run_dir / MANIFEST_FILE, manifest)
    return distributed.broadcast(manifest)


def _previous_entries(run_dir: Path) -> list[dict[str, Any]]:
    """The stage entries of the run folder's last manifest (none when missing or damaged)."""
    try:
        stages = read_json(run_dir / MANIFEST_FILE).get("stages", [])
        return [{**entry, "index": entry.get("index", position)} for position, entry in enumerate(stages)]
    except (OSError, ValueError, AttributeError, TypeError):
        return []


def _manifest_writer(run_dir: Path, manifest: dict[str, Any], previous: list[dict[str, Any]]) -> Callable[[int], None]:
    """save(reached): write this run's entries so far, then the last run's entries past index `reached`:
    a rerun that fails keeps what it did not reach. The finished run's manifest is written as is."""

    def save(reached: int) -> None:
        kept = [entry for entry in previous if entry["index"] > reached]
        write_json(run_dir / MANIFEST_FILE, {**manifest, "stages": manifest["stages"] + kept})

    return save


def _run_stage(ctx: StageContext, config: Any, source: Artifact | None, config_hash: str, index: int) -> dict[str, Any]:
    torch.manual_seed(ctx.seed)
    started = time.perf_counter()
    result = run_stage(ctx, config, source)
    seconds = time.perf_counter() - started
    params, metrics = result.artifact.evaluate(ctx.data, ctx.eval_config, ctx.device)
    entry = {
        "name": config.stage,
        "index": index,
        "output": str(result.artifact.path.relative_to(ctx.folder.parent)),
        "kind": result.artifact.kind,
        "config_hash": config_hash,
        "params": params,
        "size_bytes": dir_size_bytes(result.artifact.path),
        "seconds": round(seconds, 2),
        "metrics": metrics,
        "info": {k: v for k, v in result.info.items() if k != "history"},
    }
    write_json(ctx.folder / "metrics.json", {"test": metrics, "history": result.info.get("history", [])})
    write_file_list(ctx.folder)  # size + sha256 of every artifact file, checked whenever it is loaded
    write_json(ctx.folder / STAGE_FILE, entry)  # last: marks the stage finished
    _remove_resume_files(ctx.folder)
    ctx.log(f"{config.stage}: test ndcg@10 {metrics['ndcg@10']:.4f}  hr@10 {metrics['hr@10']:.4f}  ({seconds:.1f}s)")
    return entry


def _cached_entry(folder: Path, config_hash: str) -> dict[str, Any] | None:
    """The finished stage in `folder` if it has this id; its files are checked (ArtifactError if damaged)."""
    stage_file = folder / STAGE_FILE
    if not stage_file.is_file():
        return None
    try:
        entry = read_json(stage_file)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{stage_file} is damaged: {exc}", "rerun with --force (or delete the stage folder)") from None
    if entry.get("config_hash") != config_hash or not (folder.parent / entry["output"]).exists():
        return None
    verify_folder(folder)
    return entry


def _find_cached(
    folder: Path, config_hash: str, log: Callable[[str], None], wait: bool = False
) -> tuple[dict[str, Any] | None, Path | None]:
    """This run's finished stage for `config_hash`, else a sibling run's (linked in); and where it was found.
    With `wait`, while a live sibling run is computing this very stage, wait for it (module doc)."""
    waiting_for = None
    while True:
        entry, origin = _find_finished(folder, config_hash, log)
        if entry is not None or not wait:
            return entry, origin
        running = _running_sibling(folder, config_hash)
        if running is None:
            if waiting_for is not None:
                log(f"{waiting_for.parent.name} stopped without finishing {folder.name}: running it here")
            return None, None
        if running != waiting_for:
            log(f"{running.parent.name} is running this very {folder.name} stage: waiting for it to reuse its result")
            waiting_for = running
        time.sleep(SIBLING_POLL_S)


def _running_sibling(folder: Path, config_hash: str) -> Path | None:
    """A sibling run's stage folder computing `config_hash` now: its pending id matches, its run lock is live."""
    run_dir = folder.parent
    for sibling in sorted(run_dir.parent.iterdir()):
        pending = sibling / folder.name / PENDING_FILE
        if sibling == run_dir or not pending.is_file() or _pending_hash(pending) != config_hash:
            continue
        holder = read_lock(sibling / LOCK_FILE)
        if holder is not None and holder_alive(holder):
            return sibling / folder.name
    return None


def _find_finished(
    folder: Path, config_hash: str, log: Callable[[str], None]
) -> tuple[dict[str, Any] | None, Path | None]:
    """This run's finished stage for `config_hash`, else a sibling run's (linked in); and where it was found."""
    entry = _cached_entry(folder, config_hash)
    if entry is not None:
        _remove_resume_files(folder)  # left when a run was killed right after stage.json
        return entry, folder
    run_dir = folder.parent
    for sibling in sorted(run_dir.parent.iterdir()):
        candidate = sibling / folder.name
        try:
            entry = _cached_entry(candidate, config_hash) if sibling != run_dir else None
        except ArtifactError as exc:
            log(f"not reusing {candidate}: {exc.message}")
            continue
        if entry is not None:
            if folder.exists():
                shutil.rmtree(folder)
            shutil.copytree(candidate, folder, copy_function=link_or_copy)
            return entry, candidate
    return None, None


def _prepare_folder(folder: Path, config_hash: str, force: bool) -> None:
    """Empty the folder unless it holds an unfinished run of this very config (then resume)."""
    pending = folder / PENDING_FILE
    resumable = not force and pending.is_file() and _pending_hash(pending) == config_hash
    if folder.exists() and not resumable:
        shutil.rmtree(folder)
    elif resumable:
        clear_unfinished(folder, {CHECKPOINT_FILE, PENDING_FILE, LOG_FILE})  # what a killed process left half-done
    folder.mkdir(parents=True, exist_ok=True)
    write_json(pending, {"config_hash": config_hash})


def _pending_hash(pending: Path) -> str | None:
    try:
        return read_json(pending).get("config_hash")
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError, AttributeError):  # damaged: start the stage afresh
        return None


def _remove_resume_files(folder: Path) -> None:
    (folder / CHECKPOINT_FILE).unlink(missing_ok=True)
    (folder / PENDING_FILE).unlink(missing_ok=True)


def _quiet(folder: Path, main: bool, options: RunOptions) -> ContextManager[None]:
    """Library warnings into the stage's log.txt, not onto the terminal (rank 0; the others print them)."""
    return warnings_to_log(folder, options.show_warnings) if main else nullcontext()


def _silent(message: str) -> None:
    """The log of ranks other than 0."""


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


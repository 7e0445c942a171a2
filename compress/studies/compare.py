"""Several runs' final stages side by side, as `compress ablate` compares its variants.

`bench_finals` times every run's final stage and each distinct teacher (first stage) in one bench
session, in at least MIN_ROUNDS rounds: every teacher, then every final stage, in each round, so
slow drift of the machine hits all of them alike, and the spread between rounds says which latency
differences are noise. A stage shared by several runs (same cache id) is measured once a round.
`final_differences` ranks each final stage on the test users and gives its NDCG@10 difference to
the first run's, with a 95% paired-bootstrap interval.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from compress.bench.runs import summary
from compress.bench.session import BenchSession, TEACHER_PREFIX, bench_interleaved
from compress.bench.results import BENCH_FILE
from compress.data import load_data
from compress.evaluation.paired import ndcg_difference
from compress.recipe import Recipe
from compress.runs.files import write_json
from compress.runs.layout import MANIFEST_FILE, read_manifest, stage_folder
from compress.runtime.environment import resolve_device
from compress.handlers import Artifact, artifact_of_entry

MIN_ROUNDS = 3  # rounds the ablation's bench session takes at least: the spread between them is the noise


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
        teachers.setdefault(first["config_hash"], artifact_of_entry(runs[name], first))
        by_stage.setdefault(first["config_hash"], teachers[first["config_hash"]])
        teacher_of[name] = first["config_hash"]
        finals[name] = by_stage.setdefault(last["config_hash"], artifact_of_entry(runs[name], last))
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


def final_differences(
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
            cache[last["config_hash"]] = artifact_of_entry(runs[name], last).ranks(data, recipe.eval, device)
        return cache[last["config_hash"]]

    base = ranks(names[0])
    out: dict[str, dict | None] = {names[0]: None}
    for name in names[1:]:
        same = manifests[name]["data"]["fingerprint"] == reference["data"]["fingerprint"]
        same = same and manifests[name]["recipe"]["eval"] == reference["recipe"]["eval"]
        out[name] = ndcg_difference(ranks(name), base).as_dict() if same else None
    return out

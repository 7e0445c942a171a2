"""`compress search`: Optuna proposes stage settings, the pipeline runs each as a recipe, the judge decides.

Layout of `<output_dir>/<name>/`:
    optuna.journal   the Optuna study (default storage; any URL Optuna accepts with --storage)
    runs/c-<hash>/   one run folder per candidate, named by its values: sibling runs share finished
                     stages through the pipeline's cache (the teacher trains once), a candidate
                     proposed twice is cached, and an interrupted one resumes in the same folder
    trials.json      every trial: values, state, candidate, record or why it was dropped
    frontier.json    the Pareto frontier, the pick and why (or the closest misses): after every trial
    settled.json     the frontier and the passing candidates re-timed in one bench session at the end
                     (settle.py); their numbers then replace the trials' in frontier.json and the pick
    chosen.yaml      the pick as a plain recipe (`compress run chosen.yaml`); closest-N.yaml when none passes
    report/          report.md + report.html with the Pareto plot and the performance-law fit
Several workers may share one storage: each finished trial is in the storage, and every worker
rewrites the files above from all of them.
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from compress.errors import ArtifactError, ParityError, RecipeError, RunFolderError
from compress.evaluation.bootstrap import per_user_ndcg
from compress.handlers import TorchArtifact, artifact_of_entry
from compress.pipeline import RunOptions, run_recipe
from compress.recipe import Recipe, validate_recipe
from compress.runs.files import stable_hash, write_json
from compress.runs.locking import LOCK_FILE, holder_alive, read_lock
from compress.runtime.environment import resolve_device
from compress.search.frontier import base_line, describe_miss, summarise
from compress.search.judge import K, judge, validation_ranks, verdict_record
from compress.search.settle import apply_settled, read_settled, settle, to_settle, write_settled
from compress.search.spec import (
    OBJECTIVES, SearchSpec, apply_params, keys_off_base, load_spec, needs_bench, search_folder, settles,
)
from compress.search.space import candidate_id, decode_params, direction, make_sampler, suggest

JOURNAL_FILE = "optuna.journal"
SETTLE_PASSES = 2  # a second one-session re-timing when the first moved a candidate onto the frontier
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)  # trials the budget counts (a failed one is retried)
CANDIDATE_FAILURES = (RecipeError, ParityError, ArtifactError)  # a candidate that cannot be built is dropped, not fatal


@dataclass
class SearchOptions:
    storage: str | None = None  # overrides the spec's storage
    worker: int = 0  # seeds this worker's sampler apart from the others'
    show_progress: bool = False
    log: Callable[[str], None] = print


@dataclass
class SearchResult:
    folder: Path
    summary: dict[str, Any]
    message: str
    recipes: list[Path] = field(default_factory=list)  # chosen.yaml, or the closest misses
    report: Path | None = None

    @property
    def found(self) -> bool:
        return self.summary["chosen"] is not None


def run_search(path: Path, overrides: list[str], options: SearchOptions) -> SearchResult:
    """Validate the spec, run (or resume) the study until its budget, and write the answer."""
    spec, base_raw = load_spec(path, overrides)
    base = validate_recipe(base_raw)
    folder = search_folder(spec, base)
    folder.mkdir(parents=True, exist_ok=True)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler, sampler_name = make_sampler(spec, options.worker)
    study = optuna.create_study(
        study_name=spec.name, storage=open_storage(options.storage or spec.storage, folder),
        sampler=sampler, direction=direction(spec), load_if_exists=True,
    )
    check_same_search(study, spec, base_raw)
    recover_interrupted(study, options.log)
    search = Search(spec, base_raw, base, folder, options)
    done = len(study.get_trials(deepcopy=False, states=COUNTED))
    options.log(f"search {spec.name}: {sampler_name}, objective {spec.objective}, "
                f"{done} trial(s) already in the study, folder {folder}")
    if off := keys_off_base(spec, base_raw):
        options.log(f"note: the base recipe is not a point of the space ({', '.join(off)}: no value given "
                    f"is the base's own, or the base leaves it unset), so the pick will not be compared "
                    f"with it; to compare, set it in the spec, e.g. set: [\"{off[0]}=...\"]")
    if spec.budget.trials is None or done < spec.budget.trials:
        callbacks: list[Any] = [search.after_trial]
        if spec.budget.trials is not None:
            callbacks.append(optuna.study.MaxTrialsCallback(spec.budget.trials, states=COUNTED))
        timeout = spec.budget.minutes * 60 if spec.budget.minutes is not None else None
        study.optimize(search.objective, timeout=timeout, callbacks=callbacks, gc_after_trial=True)
    return search.finish(study)


def open_storage(url: str | None, folder: Path) -> Any:
    """The study's storage: a journal file in the search folder (several local workers may share it),
    or any database URL Optuna accepts (workers on several machines), with heartbeats."""
    if url is None:
        backend = optuna.storages.journal.JournalFileBackend(str(folder / JOURNAL_FILE))
        return optuna.storages.JournalStorage(backend)
    try:
        return optuna.storages.RDBStorage(
            url, heartbeat_interval=60, grace_period=300,
            failed_trial_callback=optuna.storages.RetryFailedTrialCallback(max_retry=1),
        )
    except Exception as exc:  # sqlalchemy's errors for a bad URL, driver or server
        raise RecipeError(f"storage: cannot open {url!r}: {exc}", "e.g. sqlite:///search.db or postgresql://host/db") from None


def check_same_search(study: optuna.Study, spec: SearchSpec, base_raw: dict[str, Any]) -> None:
    """A study resumes only with the spec it was started with (the budget and storage may change)."""
    what = spec.model_dump(mode="json", exclude={"budget", "storage", "closest", "settle"})
    fingerprint = stable_hash({"spec": what, "recipe": base_raw})
    stored = study.user_attrs.get("spec_fingerprint")
    if stored is None:
        study.set_user_attr("spec_fingerprint", fingerprint)
    elif stored != fingerprint:
        raise RecipeError(
            f"search {spec.name}: its study was started with another spec or base recipe",
            "give the changed search another name, or delete its folder to start again "
            "(only budget, storage, closest and settle may change on a resume)",
        )


def recover_interrupted(study: optuna.Study, log: Callable[[str], None]) -> None:
    """Trials left RUNNING by a dead worker on this host become FAIL; every failed trial not tried again
    since is queued to run first (its run folder, named by its values, resumes where it stopped)."""
    trials = study.get_trials(deepcopy=False)
    for trial in trials:
        worker = trial.user_attrs.get("worker")
        if trial.state == TrialState.RUNNING and worker and not holder_alive(worker):
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)  # no public API for this
            log(f"trial {trial.number} was interrupted (worker pid {worker['pid']} is gone)")
    trials = study.get_trials(deepcopy=False)
    for trial in trials:
        if trial.state != TrialState.FAIL or not trial.params:
            continue
        tried_since = any(t.number > trial.number and t.params == trial.params for t in trials)
        if not tried_since:
            study.enqueue_trial(trial.params, skip_if_exists=False)
            log(f"trial {trial.number} ({trial.user_attrs.get('candidate', '?')}) runs again first; "
                "its finished stages are reused")


class Search:
    """The objective Optuna calls, and the files written after every trial."""

    def __init__(self, spec: SearchSpec, base_raw: dict[str, Any], base: Recipe, folder: Path, options: SearchOptions):
        from compress.data import load_data

        self.spec, self.base_raw, self.base, self.folder, self.options = spec, base_raw, base, folder, options
        self.runs = folder / "runs"
        self.device = resolve_device(base.device)
        self.data = load_data(base.data, base.seed)
        self._teacher_ranks: dict[str, Any] = {}
        self.settled = read_settled(folder)

    # -- one trial -------------------------------------------------------------------------------
    def objective(self, trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", {"pid": os.getpid(), "host": socket.gethostname()})
        params = suggest(trial, self.spec)
        candidate = candidate_id(apply_params(self.base_raw, params))
        trial.set_user_attr("candidate", candidate)
        self.options.log(f"-- trial {trial.number}: {candidate} {_params_text(params)}")
        try:
            recipe = validate_recipe(self.trial_recipe(params, candidate), f"trial {trial.number} ({candidate})")
            manifest = self._run(recipe)
        except CANDIDATE_FAILURES as exc:
            trial.set_user_attr("reason", str(exc))
            self.options.log(f"trial {trial.number}: dropped: {exc.message}")
            raise optuna.TrialPruned(exc.message) from None
        record = self.record(trial.number, candidate, params, manifest)
        trial.set_user_attr("record", record)
        for name, amount in record["misses"].items():  # <= 0: met; TPE prefers feasible trials
            trial.set_constraint(name, amount)
        return float(record[OBJECTIVES[self.spec.objective][0]])

    def trial_recipe(self, params: dict[str, Any], name: str) -> dict[str, Any]:
        """The base recipe with `params` applied, run as `runs/<name>` without its own report."""
        raw = apply_params(self.base_raw, params)
        raw.update(name=name, output_dir=str(self.runs), report=False)
        if needs_bench(self.spec):
            raw["bench"] = {**(raw.get("bench") or {}), "enabled": True}
        return raw

    def _run(self, recipe: Recipe) -> dict[str, Any]:
        """run_recipe, waiting while another worker runs the very same candidate (then it is cached)."""
        options = RunOptions(show_progress=self.options.show_progress, log=lambda m: self.options.log(f"   {m}"))
        lock = recipe.output_dir / recipe.name / LOCK_FILE
        while True:
            try:
                return run_recipe(recipe, options)
            except RunFolderError:
                holder = read_lock(lock)
                if holder is None or not holder_alive(holder):
                    raise
                self.options.log(f"   {recipe.name} is being run by pid {holder['pid']}: waiting for it")
                time.sleep(2.0)

    def record(self, number: int, candidate: str, params: dict[str, Any], manifest: dict[str, Any]) -> dict[str, Any]:
        """Cost, validation verdict and test metrics of the trial's last stage against its first (the teacher)."""
        stages = manifest["stages"]
        teacher, last = stages[0], stages[-1]
        run_dir = self.runs / candidate
        teacher_ranks = self._teacher_ranks.get(teacher["config_hash"])
        if teacher_ranks is None:
            teacher_ranks = self._ranks(run_dir, teacher)
            self._teacher_ranks[teacher["config_hash"]] = teacher_ranks
        ranks = self._ranks(run_dir, last)
        bench = last.get("bench") or {}
        verdict = judge(
            ranks, teacher_ranks, self.spec.constraints, last["size_bytes"], bench.get("latency_p99_ms"),
            self.spec.bootstrap.resamples, self.spec.bootstrap.confidence, self.spec.seed,
        )
        torch_stages = [s for s in stages if s["kind"] == TorchArtifact.kind]
        return {
            "trial": number,
            "candidate": candidate,
            "params": params,
            "run": str(run_dir),
            "stages": [s["name"] for s in stages],
            "params_count": last["params"],
            "student_params": (torch_stages[-1] if torch_stages else last)["params"],
            "size_bytes": last["size_bytes"],
            "latency_p50_ms": bench.get("latency_p50_ms"),
            "latency_p99_ms": bench.get("latency_p99_ms"),
            "throughput_seq_per_s": bench.get("throughput_seq_per_s"),
            "teacher_latency_p50_ms": (teacher.get("bench") or {}).get("latency_p50_ms"),
            # against the teacher re-measured in the same bench session: comparable across sessions
            "latency_p50_vs_teacher": (bench.get("ratios") or {}).get("latency_p50_ms"),
            "bench_session": bench.get("session"),
            **verdict_record(verdict, float(per_user_ndcg(teacher_ranks, K).mean()), float(per_user_ndcg(ranks, K).mean())),
            "test_ndcg@10": last["metrics"]["ndcg@10"],
            "teacher_test_ndcg@10": teacher["metrics"]["ndcg@10"],
        }

    def _ranks(self, run_dir: Path, entry: dict[str, Any]) -> Any:
        return validation_ranks(artifact_of_entry(run_dir, entry), self.data, self.base.eval, self.device)

    # -- after every trial -----------------------------------------------------------------------
    def after_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Log the trial's verdict and rewrite trials.json, frontier.json and the pick from the whole study."""
        record = trial.user_attrs.get("record")
        summary = self.write_outputs(study)
        if record is not None:
            verdict = "passes" if record["passed"] else f"misses {describe_miss(record)}"
            self.options.log(
                f"trial {trial.number}: {record['candidate']} {self.spec.objective} "
                f"{record[OBJECTIVES[self.spec.objective][0]]:,.4g}, valid NDCG@10 {record['valid_ndcg@10']:.4f} "
                f"(drop {record['ndcg_drop']['mean']:+.4f}, CI upper {record['ndcg_drop']['ci_high']:+.4f}, "
                f"budget {record['drop_budget']:.4f}): {verdict}"
            )
        chosen = summary["chosen"]
        self.options.log(f"best so far: {chosen['candidate'] if chosen else 'none passes yet'} "
                         f"({summary['passing']} of {summary['candidates']} candidates pass)")

    def base_candidate(self, records: list[dict[str, Any]]) -> str | None:
        """The candidate that is the base recipe itself (its values all the base's, nothing dropped), if tried."""
        return next((r["candidate"] for r in records if apply_params(self.base_raw, r["params"]) == self.base_raw), None)

    def write_outputs(self, study: optuna.Study) -> dict[str, Any]:
        trials = study.get_trials(deepcopy=False)
        records = apply_settled(_records(trials), self.settled, self.spec.constraints.max_p99_ms)
        write_json(self.folder / "trials.json", [_trial_entry(t) for t in trials])
        summary = summarise(records, self.spec.objective, self.spec.closest, self.base_candidate(records))
        summary["constraints"] = self.spec.constraints.model_dump()
        write_json(self.folder / "frontier.json", summary)
        return summary

    def save_recipes(self, summary: dict[str, Any]) -> list[Path]:
        """chosen.yaml (the pick as a plain recipe), or closest-N.yaml; stale ones removed."""
        for old in [*self.folder.glob("closest-*.yaml"), self.folder / "chosen.yaml"]:
            old.unlink(missing_ok=True)
        picks = [("chosen", summary["chosen"])] if summary["chosen"] else [
            (f"closest-{i + 1}", record) for i, record in enumerate(summary["closest"])
        ]
        paths = []
        for label, record in picks:
            raw = self.trial_recipe(record["params"], f"{self.spec.name}-{label}")
            raw.pop("report")
            path = self.folder / f"{label}.yaml"
            header = (f"# {label} of search {self.spec.name} (trial {record['trial']}, candidate {record['candidate']})\n"
                      f"# compress run {path}   (stages cached from {self.runs}; "
                      f"-o output_dir=... rebuilds them elsewhere)\n")
            path.write_text(header + yaml.safe_dump(raw, sort_keys=False))
            paths.append(path)
        return paths

    def settle_answer(self, study: optuna.Study, summary: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
        """Re-time the candidates that decide the answer in one session (settle.py). The settled numbers
        can move the frontier; if a candidate joins it that was not timed, all are timed again together
        (once more at most)."""
        timed: set[str] = set()
        for _ in range(SETTLE_PASSES):
            candidates = to_settle(summary, records)
            if set(candidates) <= timed:
                break
            self.options.log(f"settling: {len(candidates)} candidate(s) (the frontier, those that pass, the base "
                             f"recipe) re-timed in one bench session")
            settled = settle(self.base, self.runs, candidates, lambda m: self.options.log(f"   {m}"))
            if settled is None:
                break
            self.settled, timed = settled, set(candidates)
            write_settled(self.folder, settled)
            summary = self.write_outputs(study)
        return summary

    def finish(self, study: optuna.Study) -> SearchResult:
        from compress.search.report import write_report

        summary = self.write_outputs(study)
        records = _records(study.get_trials(deepcopy=False))
        if settles(self.spec) and records:
            summary = self.settle_answer(study, summary, records)
        records = apply_settled(records, self.settled, self.spec.constraints.max_p99_ms)
        recipes = self.save_recipes(summary)
        report = write_report(self.folder / "report", self.spec, summary, records) if records else None
        return SearchResult(self.folder, summary, _message(summary, recipes), recipes, report)


def _message(summary: dict[str, Any], recipes: list[Path]) -> str:
    chosen = summary["chosen"]
    if chosen is not None:
        return (f"chosen: {chosen['candidate']} {_params_text(chosen['params'])}\n  {chosen['why']}\n"
                f"  test NDCG@10 {chosen['test_ndcg@10']:.4f} (teacher {chosen['teacher_test_ndcg@10']:.4f})\n"
                f"  recipe: {recipes[0]}" + _base_text(summary))
    if not summary["closest"]:
        return f"no candidate finished in {summary['trials']} trial(s)"
    lines = [f"no candidate meets the constraints ({summary['candidates']} tried); the closest:"]
    for record, path in zip(summary["closest"], recipes):
        lines.append(f"  {record['candidate']} {_params_text(record['params'])} misses {record['misses_by']} -> {path}")
    if summary.get("hint"):
        lines.append(f"  note: {summary['hint']}")
    return "\n".join(lines) + _base_text(summary)


def _base_text(summary: dict[str, Any]) -> str:
    line = base_line(summary)
    return f"\n  {line}" if line else ""


def _records(trials: list[FrozenTrial]) -> list[dict[str, Any]]:
    return [t.user_attrs["record"] for t in trials if t.state == TrialState.COMPLETE and "record" in t.user_attrs]


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in params.items())


def _trial_entry(trial: FrozenTrial) -> dict[str, Any]:
    return {
        "number": trial.number,
        "state": trial.state.name,
        "params": decode_params(trial.params),
        "candidate": trial.user_attrs.get("candidate"),
        "worker": trial.user_attrs.get("worker"),
        "reason": trial.user_attrs.get("reason"),
        "record": trial.user_attrs.get("record"),
        "seconds": (trial.datetime_complete - trial.datetime_start).total_seconds()
        if trial.datetime_complete and trial.datetime_start else None,
    }


__all__ = ["SearchOptions", "SearchResult", "run_search", "load_spec"]

"""End to end on a tiny teacher + prune: the pick re-runs to its metrics, a search with no passing
candidate keeps the closest, a search killed mid-trial resumes, and two workers share one study."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compress.pipeline import RunOptions, run_recipe
from compress.recipe import load_recipe
from compress.search.runner import SearchOptions, run_search
from tests.search.specs import tiny_spec, write_spec
from tests.test_bad_inputs import run_in_process

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def search(path, messages=None, **options):
    return run_search(path, [], SearchOptions(log=(messages.append if messages is not None else lambda m: None), **options))


def trials(folder: Path) -> list[dict]:
    return json.loads((folder / "trials.json").read_text())


def test_search_picks_the_smallest_passing_student_and_its_recipe_reruns_to_its_metrics(tmp_path):
    path = write_spec(tmp_path, tiny_spec(tmp_path, budget={"trials": 3},
                                          space={"stages.prune.mlp_ratio": [0.0, 0.5, 0.75]}))
    messages = []
    result = search(path, messages)
    assert result.found and sum("train: running" in m for m in messages) == 1  # the teacher trains once
    chosen = result.summary["chosen"]
    assert chosen["params"] == {"stages.prune.mlp_ratio": 0.75} and chosen["passed"]
    assert chosen["size_bytes"] == min(r["size_bytes"] for r in result.summary["frontier"])
    assert {"frontier", "chosen", "closest"} <= set(json.loads((result.folder / "frontier.json").read_text()))
    assert len(trials(result.folder)) == 3 and (result.folder / "report" / "pareto.png").is_file()
    assert "report.html" in os.listdir(result.folder / "report")

    rerun = load_recipe(result.recipes[0], [f"output_dir={tmp_path / 'fresh'}"])  # nothing cached there
    stages = run_recipe(rerun, RunOptions(show_progress=False, log=lambda m: None))["stages"]
    assert stages[-1]["metrics"]["ndcg@10"] == pytest.approx(chosen["test_ndcg@10"], abs=1e-9)
    assert stages[-1]["size_bytes"] == chosen["size_bytes"] and stages[-1]["params"] == chosen["params_count"]

    again = []
    search(path, again)  # the budget is spent: nothing runs, the answer is the same
    assert "3 trial(s) already in the study" in again[0] and not any(m.startswith("-- trial") for m in again)


def test_speed_decides_on_one_bench_session_at_the_end(tmp_path):
    spec = tiny_spec(tmp_path, objective="p50", budget={"trials": 2}, space={"stages.prune.mlp_ratio": [0.0, 0.5]})
    spec["recipe"]["bench"] = {"enabled": False, "warmup": 1, "iterations": 5, "batch_size_throughput": 16,
                               "throughput_iterations": 1, "rounds": 1}
    messages = []
    result = search(write_spec(tmp_path, spec), messages)
    settled = json.loads((result.folder / "settled.json").read_text())
    sessions = {r["bench_session"] for r in trials_records(result.folder)}  # each trial timed in its own session
    assert settled["session"] not in sessions
    frontier = json.loads((result.folder / "frontier.json").read_text())
    wanted = {r["candidate"] for r in frontier["frontier"]} | {r["candidate"] for r in trials_records(result.folder) if r["passed"]}
    base = frontier["base"]  # the base recipe (mlp_ratio 0.5) is in the space: re-timed with the answer
    assert base["params"] == {"stages.prune.mlp_ratio": 0.5} and base["bench_session"] == settled["session"]
    assert set(settled["candidates"]) == wanted | {base["candidate"]} and any("settling" in m for m in messages)
    assert f"the base recipe itself ({base['candidate']})" in result.message
    for record in frontier["frontier"]:  # the answer uses the re-timed numbers
        assert record["settled"] and record["bench_session"] == settled["session"]
        assert record["latency_p50_ms"] == settled["candidates"][record["candidate"]]["latency_p50_ms"]
    assert result.summary["chosen"]["latency_p50_ms"] == min(
        t["latency_p50_ms"] for name, t in settled["candidates"].items() if name in
        {r["candidate"] for r in trials_records(result.folder) if r["passed"]})

    off = {**spec, "name": "s2", "settle": False}
    assert not (search(write_spec(tmp_path, off, "off.yaml")).folder / "settled.json").exists()


def trials_records(folder: Path) -> list[dict]:
    return [t["record"] for t in trials(folder) if t["record"]]


def test_no_candidate_passes_saves_the_closest_and_exits_1(tmp_path, capsys):
    spec = tiny_spec(tmp_path, budget={"trials": 2}, space={"stages.prune.mlp_ratio": [0.25, 0.5]},
                     constraints={"max_ndcg_drop": 0.5, "max_size_mb": 0.001})
    code, _ = run_in_process(["search", str(write_spec(tmp_path, spec)), "-q"])
    output = capsys.readouterr().out
    folder = tmp_path / "out" / "s"
    summary = json.loads((folder / "frontier.json").read_text())
    assert code == 1 and summary["chosen"] is None and len(summary["closest"]) == 2
    assert summary["closest"][0]["params"] == {"stages.prune.mlp_ratio": 0.5}  # the smaller misses by less
    assert "no candidate meets the constraints" in output and "misses size_mb by" in output
    assert (folder / "closest-1.yaml").is_file() and not (folder / "chosen.yaml").exists()


def spawn(path: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "250"}  # no line of the log wrapped
    return subprocess.Popen([sys.executable, "-m", "compress", "search", str(path), "-q", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_a_search_killed_mid_trial_resumes_with_that_trial(tmp_path):
    path = write_spec(tmp_path, tiny_spec(tmp_path))
    runs = tmp_path / "out" / "s" / "runs"
    worker = spawn(path)
    while not (runs.is_dir() and len(os.listdir(runs)) >= 2) and worker.poll() is None:
        time.sleep(0.05)  # the second trial's run folder: it has started (however long the first took)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    killed = [t for t in trials(runs.parent) if t["state"] == "COMPLETE"]
    assert len(killed) == 1, "the first trial finished, the second was running"

    messages = []
    result = search(path, messages)
    assert "trial 1 was interrupted" in " ".join(messages) and any("runs again first" in m for m in messages)
    states = [t["state"] for t in trials(result.folder)]
    assert states.count("COMPLETE") == 4 and states[1] == "FAIL"
    assert result.summary["candidates"] == 4 and result.found
    assert sum("train: running" in m for m in messages) == 0  # the teacher of the killed run is reused


def test_two_workers_share_one_study(tmp_path):
    """Workers share a study through its journal. How the trials split between concurrent workers is the
    scheduler's choice, so none is assumed: a first worker runs 2 trials alone (-o budget.trials=2), then two
    more run the rest of the budget side by side. Every trial is run by exactly one worker, the one the
    study records; the grid is covered; and every worker's answer merges all the trials."""
    # a grid of 4 mlp_ratio values, budget 4; the grid sampler named, as `auto` picks TPE for a budget of 2
    path = write_spec(tmp_path, tiny_spec(tmp_path, sampler="grid"))
    first = spawn(path, "--worker", "0", "-o", "budget.trials=2")
    workers = [first]
    outputs = [first.communicate()[0]]
    assert first.returncode == 0, outputs[0]
    folder = tmp_path / "out" / "s"
    assert [t["worker"]["pid"] for t in trials(folder)] == [first.pid] * 2
    workers += [spawn(path, "--worker", str(i)) for i in (1, 2)]
    outputs += [w.communicate()[0] for w in workers[1:]]
    assert [w.returncode for w in workers] == [0, 0, 0], outputs

    entries = trials(folder)
    assert {t["state"] for t in entries} == {"COMPLETE"} and [t["number"] for t in entries] == list(range(len(entries)))
    assert len(entries) in (4, 5)  # a worker may start one trial more while another finishes the last one
    for t in entries:  # announced by exactly one worker: the one whose pid the study recorded
        line = f"-- trial {t['number']}: {t['candidate']} "
        assert [w.pid for w, out in zip(workers, outputs) if line in out] == [t["worker"]["pid"]], line
    assert {t["worker"]["pid"] for t in entries[2:]} <= {w.pid for w in workers[1:]}  # the rest: the later two
    ratios = {t["candidate"]: t["params"]["stages.prune.mlp_ratio"] for t in entries}
    assert sorted(ratios.values()) == [0.0, 0.25, 0.5, 0.75]  # each grid point, under one candidate id
    assert {t["candidate"] for t in entries[:4]} == set(ratios)  # the first 4 trials are the 4 points
    assert sorted(p.name for p in (folder / "runs").iterdir()) == sorted(ratios)  # one run folder each
    summary = json.loads((folder / "frontier.json").read_text())
    assert summary["candidates"] == 4 and summary["trials"] == len(entries)
    recorded = {t["candidate"]: t["record"]["size_bytes"] for t in entries}
    merged = [*summary["frontier"], *([summary["chosen"]] if summary["chosen"] else [])]
    assert merged and all(r["size_bytes"] == recorded[r["candidate"]] for r in merged)
    passing = [t["record"]["size_bytes"] for t in entries if t["record"]["passed"]]
    assert summary["chosen"]["size_bytes"] == min(passing)  # the smallest passing one of both phases' trials


def test_a_changed_spec_does_not_resume_another_study(tmp_path):
    from compress.errors import RecipeError

    spec = tiny_spec(tmp_path, budget={"trials": 1}, space={"stages.prune.mlp_ratio": [0.5]})
    search(write_spec(tmp_path, spec))
    search(write_spec(tmp_path, {**spec, "budget": {"trials": 2}}))  # a larger budget resumes
    spec["constraints"] = {"max_ndcg_drop": 0.1}
    with pytest.raises(RecipeError, match="started with another spec"):
        search(write_spec(tmp_path, spec))

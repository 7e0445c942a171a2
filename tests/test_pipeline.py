import json
import os
import shutil
import socket
import subprocess
import sys
import threading

import pytest
import yaml

from compress.runs.files import read_json
from compress import pipeline
from compress.models import load_model
from compress.pipeline import RunOptions, run_recipe
from compress.recipe import validate_recipe
from compress.stages import train
from tests.conftest import tiny_distill_recipe, tiny_recipe

QUIET = RunOptions(show_progress=False, log=lambda _: None)


def test_run_writes_manifest_metrics_and_model(tmp_path):
    manifest = run_recipe(validate_recipe(tiny_recipe(tmp_path)), QUIET)
    run_dir = tmp_path / "artifacts" / "tiny"
    on_disk = read_json(run_dir / "manifest.json")
    assert on_disk["stages"] == manifest["stages"]
    stage = on_disk["stages"][0]
    assert {"name", "output", "config_hash", "params", "size_bytes", "seconds", "metrics"} <= stage.keys()
    assert {"ndcg@10", "hr@10", "mrr@10", "ndcg@1", "hr@20"} <= stage["metrics"].keys()
    assert on_disk["baseline"]["metrics"]["hr@10"] >= 0
    assert on_disk["data"]["fingerprint"] and on_disk["data"]["stats"]["users"] == 120
    assert {"torch", "transformers", "python"} <= on_disk["versions"].keys()
    model = load_model(run_dir / stage["output"])
    assert model.num_parameters() == stage["params"]
    assert (run_dir / "01-train" / "metrics.json").is_file() and (run_dir / "01-train" / "log.txt").is_file()
    assert not (run_dir / "01-train" / "checkpoint.pt").exists()
    assert len(read_json(run_dir / "item_ids.json")) == on_disk["data"]["stats"]["items"]


def test_rerun_is_cached_and_force_or_changes_rerun(tmp_path):
    messages = []
    options = RunOptions(show_progress=False, log=messages.append)
    first = run_recipe(validate_recipe(tiny_recipe(tmp_path)), options)
    messages.clear()
    second = run_recipe(validate_recipe(tiny_recipe(tmp_path)), options)
    assert any(": cached" in m for m in messages)
    assert second["stages"][0] == first["stages"][0]

    messages.clear()
    changed = run_recipe(validate_recipe(tiny_recipe(tmp_path, lr=0.02)), options)
    assert not any(": cached" in m for m in messages)
    assert changed["stages"][0]["config_hash"] != first["stages"][0]["config_hash"]

    messages.clear()
    run_recipe(validate_recipe(tiny_recipe(tmp_path, lr=0.02)), RunOptions(force=True, show_progress=False, log=messages.append))
    assert not any(": cached" in m for m in messages)


def test_a_run_waits_for_a_sibling_training_the_same_stage_and_reuses_it(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "SIBLING_POLL_S", 0.05)
    run_recipe(validate_recipe({**tiny_recipe(tmp_path), "name": "done"}), QUIET)
    finished = tmp_path / "finished-train"
    shutil.move(tmp_path / "artifacts" / "done", finished)  # out of the cache's sight until the sibling "finishes"
    config_hash = read_json(finished / "01-train" / "stage.json")["config_hash"]
    busy = tmp_path / "artifacts" / "busy"  # a sibling run training this very stage right now
    (busy / "01-train").mkdir(parents=True)
    (busy / "01-train" / "pending.json").write_text(json.dumps({"config_hash": config_hash}))
    lock = {"pid": os.getpid(), "host": socket.gethostname(), "started": "now"}
    (busy / "run.lock").write_text(json.dumps(lock))

    def waiting_run(name: str, then) -> list[str]:
        """Run the recipe as `name`; once it logs that it waits for `busy`, call `then` (the sibling's move)."""
        messages, waiting = [], threading.Event()

        def log(message: str) -> None:
            messages.append(message)
            if "busy is running this very 01-train stage: waiting" in message:
                waiting.set()

        def sibling() -> None:
            if waiting.wait(timeout=120):
                then()

        thread = threading.Thread(target=sibling)
        thread.start()
        messages.append(run_recipe(validate_recipe({**tiny_recipe(tmp_path), "name": name}),
                                   RunOptions(show_progress=False, log=log)))
        waiting.set()  # never leave the thread waiting
        thread.join()
        return messages

    def finish() -> None:
        shutil.rmtree(busy / "01-train")
        shutil.copytree(finished / "01-train", busy / "01-train")
        (busy / "run.lock").unlink()

    *messages, manifest = waiting_run("tiny", finish)
    assert any("busy is running this very 01-train stage: waiting" in m for m in messages)
    assert any("train: cached (" in m and "busy" in m for m in messages)
    assert manifest["stages"][0]["config_hash"] == config_hash

    # a sibling that dies without finishing: the waiting run trains the stage itself
    shutil.rmtree(tmp_path / "artifacts" / "tiny")
    (busy / "run.lock").write_text(json.dumps(lock))
    (busy / "01-train" / "stage.json").unlink()
    (busy / "01-train" / "pending.json").write_text(json.dumps({"config_hash": config_hash}))
    *messages, _ = waiting_run("other", lambda: (busy / "run.lock").unlink(missing_ok=True))
    assert any("busy stopped without finishing 01-train: running it here" in m for m in messages)
    assert any("train: running" in m for m in messages)


def test_same_seed_same_metrics(tmp_path):
    a = run_recipe(validate_recipe({**tiny_recipe(tmp_path), "name": "a"}), QUIET)
    b = run_recipe(validate_recipe({**tiny_recipe(tmp_path), "name": "b"}), QUIET)
    assert a["stages"][0]["metrics"] == b["stages"][0]["metrics"]


def cli(*args, cwd=None):
    env = {**os.environ, "COLUMNS": "250"}  # wide enough that rich wraps no path or help line
    return subprocess.run([sys.executable, "-m", "compress", *args], capture_output=True, text=True, cwd=cwd, env=env)


@pytest.mark.slow
def test_cli_end_to_end(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(tmp_path)))
    result = cli("run", str(recipe), "-o", "stages.train.epochs=1", "--quiet")
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "artifacts" / "tiny"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["recipe"]["stages"][0]["epochs"] == 1
    report = run_dir / "report"
    assert (report / "report.md").is_file() and (report / "report.html").is_file()
    # what the terminal shows: the stage running into its folder, the results table, where the run and report are
    lines = result.stdout.splitlines()
    train, baseline = manifest["stages"][0], manifest["baseline"]["metrics"]
    assert f"[1/1] train: running -> {(run_dir / train['output']).parent}\n" in result.stdout
    assert f"train: test ndcg@10 {train['metrics']['ndcg@10']:.4f}  hr@10 {train['metrics']['hr@10']:.4f}" in result.stdout
    table = {cells[0]: cells[1:] for cells in ([c.strip() for c in line.split("│")[1:-1]] for line in lines
                                               if line.startswith("│"))}
    assert list(table) == ["popularity", "train"]  # stage, params, size, ndcg@10, hr@10, mrr@10, seconds
    assert table["popularity"][2:4] == [f"{baseline['ndcg@10']:.4f}", f"{baseline['hr@10']:.4f}"]
    assert [table["train"][0], *table["train"][2:4]] == [
        f"{train['params']:,}", f"{train['metrics']['ndcg@10']:.4f}", f"{train['metrics']['hr@10']:.4f}"]
    assert any(line.startswith(f"run folder: {run_dir}  (") for line in lines)
    assert f"report: {report / 'report.md'}" in result.stdout and str(report / "report.html") in result.stdout
    assert f"{manifest['stages'][0]['metrics']['ndcg@10']:.4f}" in (report / "report.md").read_text()


@pytest.mark.slow  # a subprocess per case
@pytest.mark.parametrize(
    "content, message",
    [
        ("name: x\nstages: [{stage: train, epochs: 0}]\n", "greater than or equal to 1"),
        ("name: x\ncolour: red\nstages: [{stage: train}]\n", "colour: unknown key"),
        ("name: x\ndata: {source: file, path: /nope.txt}\nstages: [{stage: train}]\n", "file not found"),
    ],
)
def test_cli_user_errors_exit_2_without_traceback(tmp_path, content, message):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(content)
    result = cli("run", str(recipe))
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_cli_help_lists_commands():
    import typer

    from compress.cli import app

    result = cli("--help")
    assert result.returncode == 0, result.stderr
    box = result.stdout.split("─ Commands ─", 1)[1].split("╰", 1)[0]
    rows = [line.strip("│ ").split(None, 1) for line in box.splitlines()[1:] if line.strip("│ ")]
    commands = typer.main.get_command(app).commands
    assert [name for name, _ in rows] == list(commands)  # every command, in order, nothing else
    assert {"run", "bench", "report", "ablate", "search", "export", "predict"} <= set(commands)
    for name, text in rows:  # each with the first line of its docstring
        assert text.strip() == commands[name].help.strip().splitlines()[0], name


def test_editing_the_code_reruns_the_stages_and_editing_the_cli_does_not(tmp_path, monkeypatch):
    from compress.runs import code_version

    package = shutil.copytree(code_version.PACKAGE, tmp_path / "compress", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(code_version, "PACKAGE", package)  # fingerprint a copy; the code that runs is unchanged
    code_version.code_fingerprint.cache_clear()
    try:
        messages = []
        options = RunOptions(show_progress=False, log=messages.append)
        recipe = {**tiny_recipe(tmp_path, epochs=1), "bench": {"enabled": False}}
        first = run_recipe(validate_recipe(recipe), options)

        (package / "cli.py").write_text((package / "cli.py").read_text() + "\n# a comment\n")
        code_version.code_fingerprint.cache_clear()
        messages.clear()
        assert run_recipe(validate_recipe(recipe), options)["stages"][0] == first["stages"][0]
        assert any("train: cached" in m for m in messages)

        losses = package / "training" / "losses.py"
        losses.write_text(losses.read_text() + "\n# an edited loss\n")
        code_version.code_fingerprint.cache_clear()
        messages.clear()
        second = run_recipe(validate_recipe(recipe), options)
        assert not any(": cached" in m for m in messages)
        assert second["stages"][0]["config_hash"] != first["stages"][0]["config_hash"]
    finally:
        code_version.code_fingerprint.cache_clear()


def test_a_rerun_that_fails_keeps_the_entries_it_did_not_reach(tmp_path, monkeypatch):
    recipe = {**tiny_distill_recipe(tmp_path), "bench": {"enabled": False}}
    first = run_recipe(validate_recipe(recipe), QUIET)
    manifest_file = tmp_path / "artifacts" / "tiny" / "manifest.json"

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in the new code")

    monkeypatch.setattr(train, "run", broken)
    with pytest.raises(RuntimeError, match="a bug in the new code"):
        run_recipe(validate_recipe(recipe), RunOptions(force=True, show_progress=False, log=lambda _: None))
    kept = read_json(manifest_file)["stages"]
    assert kept == [first["stages"][1]]  # train's folder was emptied for the rerun; distill's is untouched

    monkeypatch.undo()
    second = run_recipe(validate_recipe(recipe), QUIET)
    assert read_json(manifest_file)["stages"] == second["stages"] and len(second["stages"]) == 2


def test_library_warnings_go_to_the_stage_log_not_the_terminal(tmp_path, monkeypatch):
    import warnings

    original = train.run

    def warning_run(*args, **kwargs):
        warnings.warn("a TracerWarning-like library warning", UserWarning)
        return original(*args, **kwargs)

    monkeypatch.setattr(train, "run", warning_run)
    recipe = {**tiny_recipe(tmp_path, epochs=1), "bench": {"enabled": False}}
    with warnings.catch_warnings(record=True) as printed:
        warnings.simplefilter("always")
        run_recipe(validate_recipe(recipe), QUIET)
    assert not [w for w in printed if "TracerWarning-like" in str(w.message)]
    assert "UserWarning: a TracerWarning-like library warning" in (tmp_path / "artifacts/tiny/01-train/log.txt").read_text()

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from compress.errors import RecipeError
from compress.recipe import apply_override, load_recipe, validate_recipe, with_loaded_teacher
from tests.conftest import tiny_recipe


def test_valid_recipe(tmp_path):
    recipe = validate_recipe(tiny_recipe(tmp_path))
    assert recipe.stages[0].stage == "train" and recipe.stages[0].model.num_layers == 2


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r.update(colour="red"), "colour: unknown key"),
        (lambda r: r["stages"][0].update(epochs=-1), "stages.0.train.epochs: Input should be greater than or equal to 1"),
        (lambda r: r["stages"][0].update(lr="fast"), "stages.0.train.lr"),
        (lambda r: r["stages"][0].update(stage="tran"), "stages.0: unknown stage 'tran'; did you mean 'train'?"),
        (lambda r: r["stages"][0].update(epoch=3), "stages.0.train.epoch: unknown key; did you mean 'epochs'?"),
        (lambda r: r["data"].update(pth="x.csv"), "data.pth: unknown key; did you mean 'path'?"),
        (lambda r: r["data"]["synthetic"].update(user=3), "data.synthetic.user: unknown key; did you mean 'users'?"),
        (lambda r: r["data"].update(path="x.csv"), "source is 'synthetic', which would ignore it: set data.source: file"),
        (lambda r: r.update(stages=[]), "stages: List should have at least 1 item"),
        (lambda r: r["data"].update(source="file"), "no path is given"),
        (lambda r: r["data"].update(source="file", path="/no/such/file.txt"), "data.path: file not found"),
        (lambda r: r["stages"][0].update(init_from="/no/such/dir"), "init_from: folder not found"),
        (lambda r: r["stages"][0]["model"].update(num_heads=3), "divisible by num_heads"),
        (lambda r: r.update(name="bad name/.."), "name: String should match pattern"),
    ],
)
def test_invalid_recipes_name_the_field(tmp_path, mutate, message):
    raw = tiny_recipe(tmp_path)
    mutate(raw)
    with pytest.raises(RecipeError) as info:
        validate_recipe(raw)
    assert message in str(info.value)


def test_overrides_by_index_and_stage_name(tmp_path):
    raw = tiny_recipe(tmp_path)
    apply_override(raw, "stages.train.epochs=7")
    apply_override(raw, "stages.0.lr=0.5")
    apply_override(raw, "data.synthetic.users=99")
    apply_override(raw, "eval.ks=[1, 3]")
    recipe = validate_recipe(raw)
    assert recipe.stages[0].epochs == 7 and recipe.stages[0].lr == 0.5
    assert recipe.data.synthetic.users == 99 and recipe.eval.ks == [1, 3]


@pytest.mark.parametrize("override, message", [("epochs", "not key=value"), ("stages.5.lr=1", "out of range"), ("stages.distill.lr=1", "no stage named")])
def test_bad_overrides(tmp_path, override, message):
    with pytest.raises(RecipeError, match=message):
        apply_override(tiny_recipe(tmp_path), override)


def test_override_stage_name_typo_and_ambiguity(tmp_path):
    raw = tiny_recipe(tmp_path)
    raw["stages"].append({"stage": "distill", "num_layers": 1})
    with pytest.raises(RecipeError) as info:
        apply_override(raw, "stages.distil.epochs=1")
    assert "no stage named 'distil'; did you mean 'distill'?" in str(info.value)
    assert "train (0), distill (1)" in str(info.value)
    raw["stages"].append({"stage": "distill", "num_layers": 1})
    with pytest.raises(RecipeError) as info:
        apply_override(raw, "stages.distill.epochs=1")
    assert "2 stages are named 'distill' (ambiguous)" in str(info.value) and "stages.1, stages.2" in str(info.value)


def test_data_path_alone_means_a_file(tmp_path):
    """`data.path` without `source` reads the file (the synthetic default would silently ignore it)."""
    data = tmp_path / "d.csv"
    data.write_text("user_id,item_id\n1,2\n")
    raw = tiny_recipe(tmp_path)
    raw["data"] = {"path": str(data)}
    assert validate_recipe(raw).data.source == "file"
    raw["data"] = {"source": "synthetic"}
    assert validate_recipe(raw).data.source == "synthetic"
    raw["data"] = {}
    assert validate_recipe(raw).data.source == "synthetic"


def test_no_numpy_reprs_in_messages():
    import numpy as np

    from compress.errors import shown

    assert shown(np.float64(1600776888.0)) == "1600776888"
    assert shown(np.int64(7)) == "7" and shown("7") == "'7'" and shown(np.float64(0.5)) == "0.5"


def test_run_help_lists_data_formats():
    from typer.testing import CliRunner

    from compress.cli import app

    result = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for fmt in ("csv", "tsv", "parquet", "pairs", "user_lines", "atomic"):
        assert fmt in result.output
    assert "data.path" in result.output


def test_load_recipe_file_errors(tmp_path):
    with pytest.raises(RecipeError, match="not found"):
        load_recipe(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(bad)
    bad.write_text("- just a list\n")
    with pytest.raises(RecipeError, match="is a YAML mapping"):
        load_recipe(bad)


def test_shipped_recipes_are_valid(monkeypatch):
    root = Path(__file__).resolve().parents[1]
    for path in sorted((root / "recipes").rglob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        if "space" in raw:  # a `compress search` spec: tests/search/test_spec.py validates those
            continue
        if raw["data"].get("source") == "file":
            raw["data"]["path"] = str(root / "pyproject.toml")  # any existing file: only the schema is checked
        validate_recipe(raw, source=str(path))


HEAVY = ("torch", "transformers", "onnx", "onnxruntime", "pandas")
BLOCK_HEAVY = "import sys\nfor name in ('torch', 'transformers'): sys.modules[name] = None\n"


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=env)


def test_recipes_validate_without_torch_transformers_or_pandas(tmp_path):
    """Config models are importable alone, so a recipe mistake is reported in well under a second."""
    root = Path(__file__).resolve().parents[1]
    code = (
        "import sys, yaml\nfrom pathlib import Path\n"
        "from compress.recipe import validate_recipe\n"
        f"for path in sorted(Path({str(root / 'recipes')!r}).rglob('*.yaml')):\n"
        "    raw = yaml.safe_load(path.read_text())\n"
        "    if 'space' in raw: continue  # a search spec: see tests/search/test_spec.py\n"
        "    if raw['data'].get('source') == 'file':\n"
        f"        raw['data']['path'] = {str(root / 'pyproject.toml')!r}\n"
        "    validate_recipe(raw, source=str(path))\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))\n"
    )
    result = _python(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "command, recipe, data, message",
    [
        ("run", "stages: [{stage: train, epochz: 3}]", None, "stages.0.train.epochz: unknown key"),
        ("run", "stages: [{stage: train}]\ndata: {source: file, path: missing.txt}", None, "file not found: missing.txt"),
        ("run", "stages: [{stage: train}]\ndata: {source: file, path: pairs.txt}", "1 2\n1 x\n",
         "line 2: id 'x' is not an integer"),
        ("ablate", "stages: [{stage: train}]\nablation: {variants: {a: [stages.train.epochz=2]}}", None,
         "(variant a) is invalid"),
    ],
)
def test_cli_reports_recipe_and_data_mistakes_before_importing_torch(tmp_path, command, recipe, data, message):
    if data is not None:
        (tmp_path / "pairs.txt").write_text(data)
    (tmp_path / "bad.yaml").write_text(f"name: bad\n{recipe}\n")
    code = BLOCK_HEAVY + f"from compress.cli import main\nsys.argv = ['compress', {command!r}, 'bad.yaml']\nmain()\n"
    result = _python(code, tmp_path)  # importing torch or transformers would be a traceback, exit 1
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_report_builds_without_torch(tmp_path):
    """`compress report` reads run folders: it must not need torch or transformers."""
    result = _python(BLOCK_HEAVY + "import compress.report.build, compress.report.collect\nprint('ok')\n", tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_a_loaded_teacher_replaces_the_train_stage_and_keeps_the_rest(tmp_path, tiny_model):
    from compress.models import save_model

    save_model(tiny_model, tmp_path / "teacher")
    raw = tiny_recipe(tmp_path)
    raw["stages"].append({"stage": "distill", "num_layers": 1, "epochs": 1})
    recipe = validate_recipe(with_loaded_teacher(raw, tmp_path / "teacher"))
    assert [s.stage for s in recipe.stages] == ["load", "distill"] and recipe.stages[0].path == tmp_path / "teacher"
    assert raw["stages"][0]["stage"] == "train"  # the caller's recipe is left as it was
    with pytest.raises(RecipeError, match="missing is not a model folder"):
        validate_recipe(with_loaded_teacher(raw, tmp_path / "missing"))
    raw["stages"] = raw["stages"][1:]
    with pytest.raises(RecipeError, match="replaces the recipe's first stage, `train`; this recipe starts with 'distill'"):
        with_loaded_teacher(raw, tmp_path / "teacher")

"""recipes/: the starting points at the top, each with a header comment that says how to run it; examples
and studies in their subfolders; every recipe (recursively) valid; every `recipes/...yaml` path named in
the docs, code, benchmarks and recipes exists; recipes/README.md names every recipe."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from compress.recipe import validate_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
SUBFOLDERS = {"examples", "studies"}
ANY_FILE = str(ROOT / "pyproject.toml")  # an existing file: only the schema is checked


def all_recipes() -> list[Path]:
    return sorted(RECIPES.rglob("*.yaml"))


def test_the_top_holds_only_the_starting_points_and_the_subfolders():
    top = sorted(p.name for p in RECIPES.glob("*.yaml"))
    assert top == ["beauty.yaml", "ml1m.yaml", "ml1m_large.yaml", "quickstart.yaml"]
    assert {p.name for p in RECIPES.iterdir() if p.is_dir()} == SUBFOLDERS
    assert {p.parent.name for p in all_recipes()} <= SUBFOLDERS | {"recipes"}


@pytest.mark.parametrize("path", all_recipes(), ids=lambda p: str(p.relative_to(RECIPES)))
def test_every_recipe_starts_with_a_comment_naming_how_to_run_it(path):
    lines = path.read_text().splitlines()
    header = [line for line in lines[: next(i for i, line in enumerate(lines) if not line.startswith("#"))]]
    assert header and header[0].startswith("# "), "a recipe starts with a comment saying what it is for"
    assert f"recipes/{path.relative_to(RECIPES)}" in "\n".join(header), "the header shows the command that runs it"


@pytest.mark.parametrize("path", all_recipes(), ids=lambda p: str(p.relative_to(RECIPES)))
def test_every_recipe_validates(path, monkeypatch):
    from compress.search.spec import load_spec

    monkeypatch.chdir(ROOT)  # a search spec's base recipe path is relative to the repository root
    raw = yaml.safe_load(path.read_text())
    if "space" in raw:  # a `compress search` spec: its base recipe, overrides and every value of its space
        base = yaml.safe_load((ROOT / raw["recipe"]).read_text()) if isinstance(raw["recipe"], str) else raw["recipe"]
        sets = [*(raw.get("set") or [])] + ([f"data.path={ANY_FILE}"] if base["data"].get("source") == "file" else [])
        load_spec(path, [f"set={sets}"])
        return
    if raw["data"].get("source") == "file":
        raw["data"]["path"] = ANY_FILE
    validate_recipe(raw, source=str(path))


def referring_files() -> list[Path]:
    benchmarks = ROOT / "benchmarks"
    files = [ROOT / "README.md", ROOT / "Makefile", benchmarks / "README.md", *benchmarks.glob("*.py"),
             *benchmarks.glob("*.sh"), *(benchmarks / "incremental").glob("*"), *(benchmarks / "results").glob("*/README.md"),
             *(ROOT / "compress").rglob("*.py"), *(ROOT / "tests").rglob("*.py"), *RECIPES.rglob("*")]
    return [f for f in files if f.is_file() and f.suffix in (".md", ".py", ".sh", ".yaml", "")]


def test_every_recipe_path_named_exists():
    missing = []
    for path in referring_files():
        for name in re.findall(r"(?<![\w/.])recipes/[\w/]+\.yaml", path.read_text()):
            if not (ROOT / name).is_file():
                missing.append(f"{path.relative_to(ROOT)}: {name}")
    assert missing == []


def test_the_recipes_readme_names_every_recipe():
    text = (RECIPES / "README.md").read_text()
    assert [p for p in all_recipes() if f"`{p.relative_to(RECIPES)}`" not in text] == []

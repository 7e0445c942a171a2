"""README.md's "Your own data" runs as written (issue 34): the recipe edits applied to a copy of the
quickstart recipe, on a small CSV this test makes with the README's columns, then the README's commands."""

from __future__ import annotations

import os
import random
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def section(title: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.S | re.M)


def commands(block: str) -> list[list[str]]:
    lines = [line.split("#", 1)[0].strip() for line in block.splitlines()]
    return [shlex.split(line) for line in lines if line]


def test_the_example_is_shaped_as_the_readme_says():
    text = section("Your own data")
    edits = yaml.safe_load(blocks(text, "yaml")[0])
    assert set(edits) == {"name", "data"} and len(edits["data"]) == 3  # three edits of `data:`
    assert [c[0] for c in commands(blocks(text, "bash")[0])] == ["cp"]
    assert [c[:2] for c in commands(blocks(text, "bash")[1])] == [["compress", "run"], ["compress", "predict"]]


def write_csv(path: Path, header: str, users: int = 150, items: int = 60) -> None:
    """Sessions that walk the catalogue in steps of 3: a sequence model learns them, popularity does not."""
    rng = random.Random(0)
    rows, t = [header], 1_600_000_000
    for user in range(users):
        start = rng.randrange(items)
        for j in range(rng.randrange(6, 16)):
            t += 1
            rows.append(f"u{user},i{(start + 3 * j + rng.randrange(2)) % items},{t}")
    path.write_text("\n".join(rows) + "\n")


@pytest.mark.slow
def test_your_own_data_runs_as_written(tmp_path):
    text = section("Your own data")
    header = blocks(text, "text")[0].splitlines()[0]
    edits = yaml.safe_load(blocks(text, "yaml")[0])
    write_csv(tmp_path / edits["data"]["path"], header)

    (copy,) = commands(blocks(text, "bash")[0])
    recipe = yaml.safe_load((ROOT / copy[1]).read_text())
    recipe.update(edits)  # the README: replace its `name:` and `data:` sections
    (tmp_path / copy[2]).write_text(yaml.safe_dump(recipe, sort_keys=False))

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), "COLUMNS": "200"}
    outputs = []
    for command in commands(blocks(text, "bash")[1]):
        assert command[0] == "compress"
        result = subprocess.run([sys.executable, "-m", "compress", *command[1:]], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=1200)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        outputs.append(result)
    run_dir = tmp_path / "artifacts" / edits["name"]
    assert (run_dir / "report" / "report.html").is_file()
    assert "data: 150 users" in outputs[0].stdout
    recommendations = [line.split("\t") for line in outputs[1].stdout.splitlines()]
    assert len(recommendations) == 10 and all(item.startswith("i") for _, item, _ in recommendations)
    assert "scores are raw logits" in " ".join(outputs[1].stderr.split())

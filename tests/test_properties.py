"""Property tests: arbitrary input to the data readers and the recipe loader gives a parsed result or
the tool's own error (DataError / RecipeError), never anything else."""

from __future__ import annotations

import copy
import math
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compress.data import DataConfig, load_data
from compress.errors import DataError, RecipeError
from compress.recipe import Recipe, apply_override, read_raw_recipe, validate_recipe

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text that often looks almost like a data file: ids, separators, signs, headers, odd characters.
DATA_ALPHABET = "0123456789 \t\n,;-.:_eabcdiusrtm\r\xe9\u00a0"
data_text = st.text(alphabet=DATA_ALPHABET, max_size=300)
# Near-valid files (few users, so many have the 3 interactions a sequence needs), some ids out of range.
users, items = st.integers(0, 5), st.integers(0, 40)
table_text = st.lists(st.tuples(users, items, st.sampled_from(["1", "2", "3.5", "-1", "1e3"])), max_size=40).map(
    lambda rows: "user_id,item_id,timestamp\n" + "".join(f"{u},{i},{t}\n" for u, i, t in rows)
)
pairs_text = st.lists(st.tuples(users, items), max_size=40).map(lambda rows: "".join(f"{u} {i}\n" for u, i in rows))
user_lines_text = st.lists(st.tuples(users, st.lists(items, max_size=8)), max_size=10).map(
    lambda rows: "".join(" ".join(map(str, [u, *i])) + "\n" for u, i in rows)
)
contents = st.one_of(
    st.binary(max_size=300), *(s.map(str.encode) for s in (data_text, table_text, pairs_text, user_lines_text))
)
# (content, file suffix, format): the matching format half of the time, any other the rest.
matched = st.one_of(
    st.tuples(pairs_text.map(str.encode), st.just(".txt"), st.sampled_from(["auto", "pairs"])),
    st.tuples(user_lines_text.map(str.encode), st.just(".txt"), st.sampled_from(["auto", "user_lines"])),
    st.tuples(table_text.map(str.encode), st.just(".csv"), st.sampled_from(["auto", "csv"])),
)
anything = st.tuples(
    contents,
    st.sampled_from([".txt", ".data", ".csv", ".tsv", ".inter", ".parquet"]),
    st.sampled_from(["auto", "pairs", "user_lines", "csv", "tsv", "atomic", "parquet"]),
)


@SETTINGS
@given(
    case=st.one_of(matched, anything),
    header=st.booleans(),
    kcore=st.sampled_from([0, 2]),
    duplicates=st.sampled_from(["error", "drop", "keep"]),
)
def test_any_file_is_a_dataset_or_a_data_error(case, header, kcore, duplicates):
    content, suffix, fmt = case
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"data{suffix}"
        path.write_bytes(content)
        config = DataConfig(source="file", path=path, format=fmt, header=header, kcore=kcore, duplicates=duplicates)
        try:
            data = load_data(config, seed=0)
        except DataError:
            return
    assert data.num_users >= 1 and (data.lengths >= 3).all()
    assert data.items.min() >= 1 and data.items.max() <= data.num_items == len(data.item_ids)
    assert np.all(np.diff(data.offsets) > 0)


VALID: dict[str, Any] = {
    "name": "p",
    "device": "cpu",
    "data": {"synthetic": {"users": 30, "items": 40}},  # items >= the default max_len (30): a valid recipe
    "stages": [
        {"stage": "train", "model": {"hidden_size": 16, "num_layers": 2, "num_heads": 2}, "epochs": 1},
        {"stage": "distill", "num_layers": 1},
        {"stage": "export"},
        {"stage": "quantize", "backend": "onnxruntime"},
    ],
}
KEYS = ["name", "seed", "device", "data", "eval", "stages", "bench", "report", "ablation", "stage", "model",
        "num_layers", "hidden_size", "num_heads", "num_kv_heads", "epochs", "lr", "batch_size", "source", "path",
        "format", "ks", "protocol", "backend", "mode", "weights", "blocks", "init_from", "0", "1", "2", "x"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 100), st.floats(allow_nan=True), st.text(max_size=12),
                    st.sampled_from(["train", "distill", "prune", "export", "quantize", "load", "cpu", "file", "auto"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)),
                      max_leaves=12)


def mutate(raw: Any, path: list[Any], value: Any, delete: bool) -> Any:
    """`raw` with the value at `path` (followed as far as it exists) replaced or deleted."""
    raw = copy.deepcopy(raw)
    node = raw
    for step in path[:-1]:
        if isinstance(node, dict) and step in node:
            node = node[step]
        elif isinstance(node, list) and isinstance(step, int) and step < len(node):
            node = node[step]
        else:
            break
    last = path[-1]
    if isinstance(node, dict):
        if delete:
            node.pop(last, None)
        else:
            node[last] = value
    elif isinstance(node, list) and isinstance(last, int) and last < len(node):
        node[last] = value
    return raw


def same(a: Any, b: Any) -> bool:
    """Equal as plain data, NaN equal to NaN (YAML's .nan)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def expected_recipe_problems(raw: Any) -> list[str]:
    """The error lines validation must report for problems visible at the top level alone."""
    if not isinstance(raw, dict):
        return ["  - (top level): Input should be a valid dictionary or instance of Recipe"]
    lines = [f"  - {key}: Field required" for key in ("name", "stages") if key not in raw]
    for key in raw:
        if not isinstance(key, str):
            lines.append(f"  - {key}: Keys should be strings")
        elif key not in Recipe.model_fields:
            lines.append(f"  - {key}: unknown key")
    return lines


def check_validation(raw: Any) -> None:
    """validate_recipe(raw) reports the problems it must, names a field in every other problem,
    and otherwise returns a recipe holding raw's values."""
    if expected := expected_recipe_problems(raw):
        with pytest.raises(RecipeError, match=r"^recipe is invalid:\n") as caught:
            validate_recipe(raw)
        for line in expected:
            assert line in caught.value.message, (line, caught.value.message)
        return
    try:
        recipe = validate_recipe(raw)
    except RecipeError as exc:  # a problem inside a value: each line names where it is
        if exc.message.startswith(("data.path: ", "stages.")):  # the files checked after validation
            assert re.match(r"data\.path: (file not found|.* is a folder)|stages\.\d+\.init_from: folder not found",
                            exc.message), exc.message
            return
        head, *lines = exc.message.split("\n  - ")
        assert head == "recipe is invalid:" and lines, exc.message
        for line in lines:
            where = line.split(": ", 1)[0]
            assert where == "(top level)" or where.split(".")[0] in raw, (where, exc.message)
        return
    check_recipe_holds(recipe, raw)


def check_recipe_holds(recipe: Recipe, raw: dict[str, Any]) -> None:
    """The validated recipe has raw's name, stages in order, scalar settings, and defaults for the rest."""
    assert recipe.name == raw["name"]
    assert [stage.stage for stage in recipe.stages] == [stage["stage"] for stage in raw["stages"]]
    for key, default in (("seed", 0), ("device", "auto"), ("report", True)):
        assert getattr(recipe, key) == raw.get(key, default)
    for stage, given in zip(recipe.stages, raw["stages"]):
        for key, value in given.items():
            if isinstance(value, (bool, int, float)) and not (isinstance(value, float) and math.isnan(value)):
                assert getattr(stage, key) == value, (stage.stage, key, value)


def test_the_unmutated_recipe_is_valid():
    check_recipe_holds(validate_recipe(copy.deepcopy(VALID)), VALID)


@SETTINGS
@given(
    mutations=st.lists(
        st.tuples(st.lists(st.one_of(st.sampled_from(KEYS), st.integers(0, 4)), min_size=1, max_size=4), values,
                  st.booleans()),
        max_size=4,
    )
)
def test_any_mutated_recipe_is_a_recipe_or_a_recipe_error(mutations):
    raw: Any = VALID
    for path, value, delete in mutations:
        raw = mutate(raw, path, value, delete)
    check_validation(raw)


@SETTINGS
@given(raw=st.one_of(values, st.dictionaries(st.sampled_from(KEYS), values, max_size=3).map(lambda v: {**VALID, **v})))
def test_any_yaml_value_is_a_recipe_or_a_recipe_error(raw):
    check_validation(raw)


def override_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def expected_override(raw: Any, override: str) -> tuple[Any, str | None]:
    """(raw with `override` applied, None), or (None, the RecipeError message expected), as documented:
    `a.b.c=value`, value parsed as YAML (its text when it is not YAML); a list step is an index or the
    name of its one stage; a missing mapping step is created."""
    key, sep, text = override.partition("=")
    if not sep or not key:
        return None, "is not key=value"
    value = override_value(text)
    raw = copy.deepcopy(raw)
    node, parts = raw, key.split(".")
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(node, list):
            if part.lstrip("-").isdigit():
                index = int(part)
                if not -len(node) <= index < len(node):
                    return None, f"index {index} is out of range"
            else:
                matches = [i for i, item in enumerate(node) if isinstance(item, dict) and item.get("stage") == part]
                if len(matches) != 1:
                    return None, "stage named"
                index = matches[0]
            if last:
                node[index] = value
            else:
                node = node[index]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            return None, "is not a mapping or list"
    return raw, None


def check_override(raw: Any, override: str) -> Any:
    """Apply `override` to a copy of raw: the documented change and nothing else, or the documented error."""
    expected, error = expected_override(raw, override)
    raw = copy.deepcopy(raw)
    if error is not None:
        with pytest.raises(RecipeError, match=rf"^override .*{re.escape(error)}"):
            apply_override(raw, override)
        return None
    apply_override(raw, override)
    assert same(raw, expected), (override, raw, expected)
    yaml.safe_dump(raw)  # still plain data
    return raw


override_keys = st.one_of(
    st.sampled_from(["name", "seed", "stages.0.epochs", "stages.train.epochs", "stages.distill.num_layers",
                     "stages.-1.backend", "stages.-4.stage", "stages.0.model.hidden_size", "data.synthetic.users",
                     "data.new.deep.key", "bench.iterations", "stages.4.epochs", "stages.-5.epochs", "stages.nope.x",
                     "name.sub", "seed.0", "stages", "stages.train", "stages.quantize.parity.min_overlap"]),
    st.lists(st.one_of(st.sampled_from(KEYS), st.sampled_from(["-1", "-5", "9", "train", "export"])),
             min_size=1, max_size=4).map(".".join),
)
override_values = st.one_of(st.sampled_from(["3", "0.5", "[1, 2]", "{a: 1}", "", "null", ".nan", "a: b: c", "x"]),
                            st.text(alphabet="ab01.-:[]{}, ", max_size=10))


@SETTINGS
@given(text=st.one_of(st.text(max_size=200), st.binary(max_size=200), st.just(VALID).map(yaml.safe_dump),
                      st.dictionaries(st.sampled_from(KEYS), values, max_size=4).map(yaml.safe_dump)),
       overrides=st.lists(st.one_of(st.text(alphabet="stagerinpochlx.=0123-:[]{} ", max_size=24),
                                    st.tuples(override_keys, override_values).map("=".join)), max_size=3))
def test_any_recipe_file_and_overrides_are_read_or_a_recipe_error(text, overrides):
    content = text if isinstance(text, bytes) else text.encode()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "r.yaml"
        path.write_bytes(content)
        try:
            parsed = yaml.safe_load(path.read_text())
            error = None if isinstance(parsed, dict) else "a recipe is a YAML mapping"
        except UnicodeDecodeError:
            error = "is not a UTF-8 text file"
        except yaml.YAMLError:
            error = "is not valid YAML"
        if error is None:
            expected = parsed
            for override in overrides:
                expected, error = expected_override(expected, override)
                if error is not None:
                    break
        if error is not None:
            with pytest.raises(RecipeError, match=re.escape(error)):
                read_raw_recipe(path, overrides)
            return
        raw = read_raw_recipe(path, overrides)
    assert same(raw, expected), (raw, expected)


@SETTINGS
@given(override=st.one_of(st.text(max_size=30), st.tuples(override_keys, override_values).map("=".join)),
       raw=st.just(VALID))
def test_any_override_applies_or_is_a_recipe_error(override, raw):
    applied = check_override(raw, override)
    if applied is not None and override.partition("=")[0] in ("stages.train.epochs", "stages.0.epochs"):
        assert same(applied["stages"][0]["epochs"], override_value(override.partition("=")[2]))  # the train stage


def test_an_index_in_non_ascii_digits_is_a_recipe_error():
    with pytest.raises(RecipeError, match="stages"):
        apply_override(copy.deepcopy(VALID), "stages.²=1")

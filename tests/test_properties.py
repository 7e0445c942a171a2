"""Property tests: arbitrary input to the data readers and the recipe loader gives a parsed result or
the tool's own error (DataError / RecipeError), never anything else."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
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
    "data": {"synthetic": {"users": 30, "items": 20}},
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
    try:
        assert isinstance(validate_recipe(raw), Recipe)
    except RecipeError:
        pass


@SETTINGS
@given(raw=values)
def test_any_yaml_value_is_a_recipe_or_a_recipe_error(raw):
    try:
        validate_recipe(raw) if isinstance(raw, dict) else None
    except RecipeError:
        pass


@SETTINGS
@given(text=st.one_of(st.text(max_size=200), st.binary(max_size=200)),
       overrides=st.lists(st.text(alphabet="stagerinpochlx.=0123-:[]{} ", max_size=24), max_size=3))
def test_any_recipe_file_and_overrides_are_read_or_a_recipe_error(text, overrides):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "r.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        try:
            raw = read_raw_recipe(path, overrides)
        except RecipeError:
            return
    assert isinstance(raw, dict)


@SETTINGS
@given(override=st.text(max_size=30), raw=st.just(VALID))
def test_any_override_applies_or_is_a_recipe_error(override, raw):
    raw = copy.deepcopy(raw)
    try:
        apply_override(raw, override)
    except RecipeError:
        return
    yaml.safe_dump(raw)  # still plain data

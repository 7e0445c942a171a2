import os
import shutil

import pytest

from compress.errors import DataError
from compress.pipeline import RunOptions, run_recipe
from compress.recipe import validate_recipe
from compress.runs.layout import read_manifest
from compress.runs.run_data import load_run_data
from tests.conftest import tiny_recipe


def pairs(users: int = 30, length: int = 6, rename: dict[int, int] | None = None) -> str:
    rows = [(u, (u * 7 + step * 3) % 25 + 1) for u in range(1, users + 1) for step in range(length)]
    return "".join(f"{u} {(rename or {}).get(i, i)}\n" for u, i in rows)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run made in `where` from the relative data path `data.txt`."""
    where = tmp_path_factory.mktemp("made_here")
    (where / "data.txt").write_text(pairs())
    recipe = tiny_recipe(where, epochs=1)
    recipe["data"] = {"source": "file", "path": "data.txt", "max_len": 20}
    recipe["bench"] = {"enabled": False}
    recipe["report"] = False
    cwd = os.getcwd()
    os.chdir(where)
    try:
        run_recipe(validate_recipe(recipe), RunOptions(show_progress=False, log=lambda _: None))
    finally:
        os.chdir(cwd)
    return where / "artifacts" / "tiny"


def test_the_run_data_reloads_from_another_folder(run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # data.txt is not here: the manifest's absolute path is used
    data = load_run_data(run)
    assert data.fingerprint() == read_manifest(run)["data"]["fingerprint"]


def test_a_changed_file_is_an_error_saying_what_differs(run, tmp_path, monkeypatch):
    (tmp_path / "data.txt").write_text(pairs() + "1 2\n")  # one interaction more, found as the relative path
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"not the data run tiny was made from: interactions 180 -> 181"):
        load_run_data(run)


def test_relabelled_items_are_an_error_though_the_sequences_match(run, tmp_path, monkeypatch):
    (tmp_path / "data.txt").write_text(pairs(rename={25: 99}))  # the largest id stays largest: same fingerprint
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"item ids differ \(item \d+ was '25', is now '99'\)"):
        load_run_data(run)


def test_bench_and_export_reload_through_the_check(run, tmp_path, monkeypatch):
    from compress.bench.runs import bench_run
    from compress.evaluation.parity import ParityConfig
    from compress.export.onnx_export import ExportSettings, export_path

    copy = shutil.copytree(run, tmp_path / "run")
    (tmp_path / "data.txt").write_text(pairs(users=29))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="users 30 -> 29"):
        bench_run(copy, log=lambda _: None)
    with pytest.raises(DataError, match="users 30 -> 29"):
        export_path(copy, tmp_path / "onnx", ExportSettings(), ParityConfig(), log=lambda _: None)

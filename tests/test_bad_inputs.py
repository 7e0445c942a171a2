"""The bad-input corpus (tests/bad_inputs/cases.yaml): every user mistake is exit code 2, a message
saying what is wrong, and no traceback. Most cases run in-process (fast); those marked
`subprocess: true` go through `python -m compress` to show that no traceback reaches the user."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from compress.cli import main
from compress.errors import DataError
from compress.runs.integrity import write_file_list
from compress.runs.locking import LOCK_FILE
from compress.models import RecommenderConfig, SequentialRecommender, save_model

HERE = Path(__file__).parent / "bad_inputs"
ROOT = Path(__file__).resolve().parents[1]
CASES = yaml.safe_load((HERE / "cases.yaml").read_text())


def tiny_model_folder(tmp: Path) -> Path:
    config = RecommenderConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, num_items=20, max_len=8)
    save_model(SequentialRecommender(config), tmp / "model")
    return tmp / "model"


def _unreadable(tmp, request, monkeypatch):
    secret = tmp / "secret.txt"
    secret.write_text("1 5\n1 6\n1 7\n")
    secret.chmod(0)
    if os.geteuid() == 0:  # root reads anything: make the read fail as it would for a user
        def denied(path, *args, **kwargs):
            raise PermissionError(13, "Permission denied", str(path))

        monkeypatch.setattr("compress.data.readers.pd.read_csv", denied)


def _long_id_parquet(tmp, request, monkeypatch):
    """Two Parquet cousins of long_id.txt: an id beyond int64 as uint64, and a 21-digit id as a string."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    users, items = [1, 1, 1, 2, 2, 2, 3, 3, 3], [5, 6, 7, 5, 2**64 - 1, 7, 5, 6, 7]
    pq.write_table(pa.table({"user_id": users, "item_id": pa.array(items, pa.uint64())}), tmp / "uint64.parquet")
    strings = [str(i) for i in items[:4]] + ["123456789012345678901"] + [str(i) for i in items[5:]]
    pq.write_table(pa.table({"user_id": users, "item_id": strings}), tmp / "string.parquet")


def _mismatched_model(tmp, request, monkeypatch):
    folder = tiny_model_folder(tmp)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "num_items": 21}))


def _broken_config(tmp, request, monkeypatch):
    (tiny_model_folder(tmp) / "config.json").write_text("{not json")


def _garbage_weights(tmp, request, monkeypatch):
    (tiny_model_folder(tmp) / "model.safetensors").write_bytes(b"garbage" * 10)


def _onnx_artifact(tmp, request, monkeypatch):
    _, source = request.getfixturevalue("tiny_onnx")
    shutil.copytree(source, tmp / "onnx")
    write_file_list(tmp / "onnx")


def _corrupt_onnx(tmp, request, monkeypatch):
    _onnx_artifact(tmp, request, monkeypatch)
    model = tmp / "onnx" / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))


def _truncated_stage(tmp, request, monkeypatch):
    code, output = run_in_process(["run", str(HERE / "recipes" / "base.yaml"), "-o", f"output_dir={tmp}/artifacts"])
    assert code == 0, output
    weights = tmp / "artifacts" / "base" / "01-train" / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])


def _changed_data(tmp, request, monkeypatch):
    """A run made from {tmp}/data.txt, which then gains a line."""
    rows = "".join(f"{user} {item}\n" for user in range(1, 21) for item in range(user % 5 + 1, user % 5 + 6))
    (tmp / "data.txt").write_text(rows)
    code, output = run_in_process(["run", str(HERE / "recipes" / "base.yaml"), "-o", f"output_dir={tmp}/artifacts",
                                   "-o", "data.source=file", "-o", f"data.path={tmp}/data.txt"])
    assert code == 0, output
    (tmp / "data.txt").write_text(rows + "1 9\n")


def _locked_run(tmp, request, monkeypatch):
    folder = tmp / "artifacts" / "base"
    folder.mkdir(parents=True)
    holder = {"pid": os.getpid(), "host": os.uname().nodename, "started": "2026-01-01T00:00:00"}
    (folder / LOCK_FILE).write_text(json.dumps(holder))


SETUPS = {name[1:]: fn for name, fn in globals().items() if name.startswith("_") and callable(fn) and fn.__module__ == __name__}


def run_in_process(args: list[str]) -> tuple[int, str]:
    """`compress <args>` through the console entry point; (exit code, stdout + stderr)."""
    saved = sys.argv
    sys.argv = ["compress", *args]
    try:
        main()
        code = 0
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
    finally:
        sys.argv = saved
    return code, ""


def run_subprocess(args: list[str]) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "compress", *args], capture_output=True, text=True, env=env, timeout=300)
    return result.returncode, result.stdout + result.stderr


def expand(args: list[str], tmp: Path) -> list[str]:
    values = {"recipes": HERE / "recipes", "data": HERE / "data", "tmp": tmp}
    out = [str(arg).format(**values) for arg in args]
    return out + ["-o", f"output_dir={tmp}/artifacts"] if out[0] == "run" else out


def squash(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize(
    "case", [pytest.param(case, id=case["id"], marks=[pytest.mark.slow] if case.get("subprocess") else []) for case in CASES]
)
def test_bad_input(case, tmp_path, request, monkeypatch, capsys):
    if "setup" in case:
        SETUPS[case["setup"]](tmp_path, request, monkeypatch)
        capsys.readouterr()
    args = expand(case["args"], tmp_path)
    if case.get("subprocess"):
        code, output = run_subprocess(args)
    else:
        code, _ = run_in_process(args)  # any exception but SystemExit fails the test with its traceback
        captured = capsys.readouterr()
        output = captured.out + captured.err
    assert code == case.get("code", 2), output
    assert squash(case["expect"]) in squash(output)
    assert "Traceback" not in output
    if "absent" in case:
        assert case["absent"] not in output, output


def test_corpus_size():
    assert len(CASES) >= 60 and len({case["id"] for case in CASES}) == len(CASES)


def test_read_error_is_a_data_error(tmp_path, monkeypatch):
    from compress.data.readers import read_interactions

    path = tmp_path / "d.txt"
    path.write_text("1 5\n1 6\n")

    def failing(*args, **kwargs):
        raise OSError(5, "Input/output error", str(path))

    monkeypatch.setattr("compress.data.readers.pd.read_csv", failing)
    with pytest.raises(DataError, match="Input/output error"):
        read_interactions(path)

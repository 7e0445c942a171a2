import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from compress.errors import ArtifactError
from compress.serve.onnx_model import OnnxRecommender
from compress.serve.predict import InputError, Request, read_requests, recommend

NO_TORCH_CLI = "import sys; sys.modules['torch'] = None; from compress.cli import main; sys.argv[0] = 'compress'; main()"


def torch_topk(model, internal_ids, k=10):
    ids = torch.tensor([internal_ids])
    with torch.no_grad():
        scores = model.score(model.last_states(ids, torch.ones_like(ids)))
    scores[0, ids[0]] = float("-inf")
    return scores.topk(k).indices[0].tolist()


def test_recommendations_match_the_pytorch_top_k(tiny_onnx, tiny_data):
    model, folder = tiny_onnx
    original = tiny_data.item_ids.tolist()
    histories = [[3, 17, 8], [40, 2, 2, 9, 33, 51, 1, 7]]
    requests = [Request([str(original[i - 1]) for i in h]) for h in histories]
    results = recommend(OnnxRecommender(folder), requests)
    for history, result in zip(histories, results):
        assert result.items == [original[i - 1] for i in torch_topk(model, history)]
        assert len(result.scores) == 10 and not result.dropped


def test_unknown_ids_are_dropped_and_empty_histories_refused(tiny_onnx, tiny_data):
    model = OnnxRecommender(tiny_onnx[1])
    known = str(tiny_data.item_ids[4])
    [result] = recommend(model, [Request([known, "no-such-item"])], top_k=3)
    assert result.dropped == ["no-such-item"] and len(result.items) == 3
    with pytest.raises(InputError, match="no known item"):
        recommend(model, [Request(["no-such-item"])])
    with pytest.raises(InputError, match="out of range"):
        recommend(model, [Request([known])], top_k=11)


def test_input_file_formats(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('1 2 3\n\n["4", 5]\n{"user": "u9", "history": [6, 7]}\n')
    requests = read_requests(path)
    assert [r.history for r in requests] == [["1", "2", "3"], ["4", "5"], ["6", "7"]]
    assert requests[2].user == "u9" and requests[2].line == 4
    path.write_text('{"user": "u1"}\n')
    with pytest.raises(InputError, match="needs a `history` list"):
        read_requests(path)
    path.write_text("[1, 2\n")
    with pytest.raises(InputError, match="not valid JSON"):
        read_requests(path)


def cli(*args):
    result = subprocess.run([sys.executable, "-c", NO_TORCH_CLI, *args], capture_output=True, text=True)
    result.stderr = " ".join(result.stderr.split())  # rich wraps long messages
    return result


def test_predict_cli_serves_without_torch(tiny_onnx, tiny_data, tmp_path):
    model, folder = tiny_onnx
    original = tiny_data.item_ids.tolist()
    result = cli("predict", str(folder), "--history", f"{original[2]} {original[16]} unknown", "--top-k", "5")
    assert result.returncode == 0, result.stderr
    lines = [line.split("\t") for line in result.stdout.strip().splitlines()]
    assert [int(line[0]) for line in lines] == [1, 2, 3, 4, 5]
    assert [line[1] for line in lines] == [str(original[i - 1]) for i in torch_topk(model, [3, 17], k=5)]
    assert "unknown item ids dropped: unknown" in result.stderr

    histories = tmp_path / "h.jsonl"
    histories.write_text(f'{{"user": "a", "history": [{original[0]}]}}\n{original[1]} {original[2]}\n')
    result = cli("predict", str(folder), "--input", str(histories))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["user"] for r in records] == ["a", None] and all(len(r["items"]) == 10 for r in records)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--history", ""], "no known item"),
        (["--history", "nope"], "no known item"),
        ([], "exactly one of --history or --input"),
        (["--input", "/no/such/file"], "input file not found"),
    ],
)
def test_predict_cli_bad_input_exits_2(tiny_onnx, args, message):
    result = cli("predict", str(tiny_onnx[1]), *args)
    assert result.returncode == 2 and message in result.stderr
    assert "Traceback" not in result.stderr


def test_predict_cli_bad_artifact_exits_2(tmp_path):
    result = cli("predict", str(tmp_path), "--history", "1 2")
    assert result.returncode == 2 and "not an ONNX artifact" in result.stderr

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from compress.errors import ArtifactError
from compress.serve.onnx_model import OnnxRecommender


def test_scores_match_pytorch_and_topk_leaves_out_inputs(tiny_onnx):
    model, folder = tiny_onnx
    onnx_model = OnnxRecommender(folder)
    ids = np.array([[0, 0, 0, 5, 9, 3], [1, 2, 3, 4, 5, 6]], dtype=np.int64)
    mask = (ids > 0).astype(np.int64)
    with torch.no_grad():
        expected = model.score(model.last_states(torch.from_numpy(ids), torch.from_numpy(mask))).numpy()
    scores = onnx_model.scores(ids, mask)
    assert scores.shape == (2, onnx_model.num_items + 1) and np.isneginf(scores[:, 0]).all()
    np.testing.assert_allclose(scores[:, 1:], expected[:, 1:], atol=1e-5)
    top_scores, top_ids = onnx_model.topk(ids, mask)
    assert top_ids.shape == (2, 10) and (np.diff(top_scores, axis=1) <= 0).all()
    for row, inputs in zip(top_ids, ids):
        assert not set(row) & set(inputs)
    # the tied table, stored again transposed for scoring, counts once (equal constants, such as the
    # untrained norms' ones, may be shared by the exporter, hence no equality)
    assert abs(onnx_model.num_parameters() - model.num_parameters()) < model.item_table.numel() // 2
    assert onnx_model.metadata["source"] == {"run": "test"} and onnx_model.max_len == 20


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda f: shutil.rmtree(f), "not found"),
        (lambda f: (f / "metadata.json").unlink(), "metadata.json is missing"),
        (lambda f: (f / "model.onnx").unlink(), "model.onnx is missing"),
        (lambda f: (f / "metadata.json").write_text("{nope"), "not valid JSON"),
        (lambda f: (f / "metadata.json").write_text('{"format": "other"}'), "does not describe"),
        (lambda f: (f / "model.onnx").write_bytes(b"garbage"), "onnxruntime cannot load"),
    ],
)
def test_bad_artifact_folder_is_a_clear_error(tiny_onnx, tmp_path, damage, message):
    folder = tmp_path / "artifact"
    shutil.copytree(tiny_onnx[1], folder)
    damage(folder)
    with pytest.raises(ArtifactError, match=message):
        OnnxRecommender(folder)


def test_reader_does_not_import_torch(tiny_onnx):
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import numpy as np\n"
        "from compress.serve.onnx_model import OnnxRecommender\n"
        f"m = OnnxRecommender({str(tiny_onnx[1])!r})\n"
        "ids = np.array([[1, 2, 3]]); print(m.topk(ids, ids > 0)[1].shape)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "(1, 10)" in result.stdout

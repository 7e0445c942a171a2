"""Every stage on a prompted teacher: an SLMRec checkpoint (compress/models/tiny_teachers.py) imported by the
load stage, its instruction and response embeddings around the items. distill, prune (depth and width),
item_table recovery, export with the step model, quantize, predict and stateful serving."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from compress.models import SequentialRecommender, load_model
from compress.models.tiny_teachers import slmrec_checkpoint
from compress.pipeline import run_recipe
from compress.recipe import validate_recipe
from tests.stages.test_load_import import NUM_ITEMS, QUIET, _recipe, _slmrec_load

pytest.importorskip("peft")

SHORT = {"epochs": 1, "batch_size": 32}


@pytest.fixture(scope="module")
def slmrec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding a tiny SLMRec checkpoint (`slm/`); runs write their artifacts beside it."""
    root = tmp_path_factory.mktemp("slmrec")
    slmrec_checkpoint(root / "slm", NUM_ITEMS)
    return root


def _run(root: Path, name: str, *stages: dict) -> tuple[list[dict], list[Path]]:
    """Run load + `stages` as run `name`; each stage's manifest entry and output folder."""
    raw = _recipe(root, _slmrec_load(root / "slm"), *stages)
    raw["name"] = name
    entries = run_recipe(validate_recipe(raw), QUIET)["stages"]
    return entries, [root / "artifacts" / name / entry["output"] for entry in entries]


def _assert_same_prompt(model: SequentialRecommender, teacher: SequentialRecommender) -> None:
    assert (model.config.prefix_len, model.config.suffix_len) == (teacher.config.prefix_len, teacher.config.suffix_len)
    prompt = teacher.prompt_embeddings()
    assert prompt and set(model.prompt_embeddings()) == set(prompt)
    for name, value in prompt.items():
        assert torch.equal(model.prompt_embeddings()[name], value), name


def _assert_ranks(model: SequentialRecommender, entry: dict) -> None:
    ids = torch.randint(1, NUM_ITEMS + 1, (4, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.isfinite(model.next_item_scores(ids, torch.ones_like(ids))[:, 1:]).all()
    assert 0 <= entry["metrics"]["ndcg@10"] <= entry["metrics"]["hr@10"] <= 1


@pytest.mark.parametrize("init", ["teacher", "fresh"])
def test_distill_gives_a_student_with_the_teachers_prompt(slmrec, init):
    distill = {"stage": "distill", "num_layers": 1, "blocks": 1, "init": init, "layer_selection": "importance",
               "weights": {"ce": 1, "cosine": 1, "multi_supervision": 1, "kd": 1}, **SHORT}
    entries, folders = _run(slmrec, f"distill-{init}", distill)
    teacher, student = load_model(folders[0]), load_model(folders[1])
    assert student.config.num_layers == 1 and student.config.item_dim == teacher.config.item_dim == 128
    _assert_same_prompt(student, teacher)
    _assert_ranks(student, entries[1])
    # it trained: no layer of the student is one of the teacher's as copied
    trained = student.backbone.layers[0].mlp.up_proj.weight
    assert not any(torch.equal(trained, layer.mlp.up_proj.weight) for layer in teacher.backbone.layers)


def test_prune_depth_and_width_leave_the_prompt_bit_identical(slmrec):
    prune = {"stage": "prune", "num_layers": 1, "num_heads": 2, "mlp_ratio": 0.5, "importance": "taylor",
             "calibration_batches": 2, "recovery": {**SHORT, "blocks": 1}}
    entries, folders = _run(slmrec, "prune", prune)
    teacher, pruned = load_model(folders[0]), load_model(folders[1])
    config = pruned.config
    assert (config.num_layers, config.num_heads, config.intermediate_size) == (1, 2, teacher.config.intermediate_size // 2)
    _assert_same_prompt(pruned, teacher)
    _assert_ranks(pruned, entries[1])


def test_item_table_recovery_of_a_prompted_teacher(slmrec):
    table = {"stage": "item_table", "method": "rowwise", "bits": 4, "recovery": SHORT}
    entries, folders = _run(slmrec, "table", table)
    teacher, compressed = load_model(folders[0]), load_model(folders[1])
    assert compressed.config.table is not None
    _assert_same_prompt(compressed, teacher)
    _assert_ranks(compressed, entries[1])


def test_a_prompted_student_exports_quantizes_predicts_and_serves(slmrec):
    """distill -> export (top-k and step model, both parity-gated) -> onnxruntime int8; the ONNX model
    recommends what the PyTorch student ranks first, and the event stream gives the full pass's top-k."""
    from compress.serve.onnx_model import OnnxRecommender
    from compress.serve.predict import Request, recommend
    from compress.serve.stateful import StatefulRecommender

    stages = [{"stage": "distill", "num_layers": 1, "blocks": 1, **SHORT},
              {"stage": "export", "top_k": 5, "incremental": True},
              {"stage": "quantize", "backend": "onnxruntime", "mode": "dynamic"}]
    entries, folders = _run(slmrec, "deploy", *stages)
    _, student_entry, export_entry, quantize_entry = entries
    assert export_entry["metrics"]["ndcg@10"] == pytest.approx(student_entry["metrics"]["ndcg@10"], abs=1e-6)
    assert 0 <= quantize_entry["metrics"]["ndcg@10"] <= 1
    student, onnx = load_model(folders[1]), folders[2]
    assert (onnx / "step.onnx").is_file()

    original = [str(i) for i in json.loads((slmrec / "artifacts" / "deploy" / "item_ids.json").read_text())]
    history = [3, 17, 8, 41, 2]
    ids = torch.tensor([history])
    with torch.no_grad():
        scores = student.next_item_scores(ids, torch.ones_like(ids))
    scores[0, ids[0]] = float("-inf")  # history items are not recommended
    expected = [original[i - 1] for i in scores.topk(5).indices[0].tolist()]
    [result] = recommend(OnnxRecommender(onnx), [Request([original[i - 1] for i in history])])
    assert [str(i) for i in result.items] == expected

    events = [("u", original[i - 1]) for i in history]
    served = StatefulRecommender(onnx).observe(events)
    full = OnnxRecommender(onnx)
    for t, result in enumerate(served):
        window = np.array([history[: t + 1]])
        top = full.topk(window, np.ones_like(window))[1][0, :5]
        assert result.error is None and [str(i) for i in result.items] == [original[i - 1] for i in top]

"""ONNX export of the append-one-event step model (`onnx/step.onnx`) and its parity check.

`export_step` writes `step.onnx` beside `model.onnx` (the graph of compress.models.step.StepGraph:
new items + past keys/values in, top-K + the new slots' keys/values out) and returns the `step` entry of
`metadata.json`. `step_parity` replays test histories through the ONNX step (empty state, then one
item at a time, batched across users of different lengths) and compares its scores with the
PyTorch full pass over the same history: the export stage's parity gate records it in
`parity.json` under `step` and fails when the scores differ by more than `max_abs_diff` or the
top-K differs.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from compress.data.batching import history_and_target
from compress.data.sequences import SequenceData
from compress.errors import ArtifactError, ParityError
from compress.export.graph import share_transposed_initializers
from compress.models import SequentialRecommender
from compress.models.step import STEP_INPUTS, STEP_OUTPUTS, StepGraph, new_names, past_names
from compress.data.padding import left_pad
from compress.serve.step_model import DEFAULT_OVERFLOW, OVERFLOW_POLICIES, STEP_FILE, OnnxStepModel

MAX_ABS_DIFF = 1e-4


def step_metadata(model: SequentialRecommender, top_k: int, opset: int, seconds: float) -> dict[str, Any]:
    """The `step` entry of metadata.json: file, names, shapes (symbolic axes), dtypes, positions."""
    c = model.config
    kv = ["batch", c.num_kv_heads, "past", c.head_dim]
    new = ["batch", c.num_kv_heads, "new", c.head_dim]
    inputs = {
        "item_ids": {"shape": ["batch", "new"], "dtype": "int64"},
        "attention_mask": {"shape": ["batch", "past + new"], "dtype": "int64"},
        "position_ids": {"shape": ["batch", "new"], "dtype": "int64"},
        "exclude_ids": {"shape": ["batch", "excluded"], "dtype": "int64"},
        **{name: {"shape": kv, "dtype": "float32"} for name in past_names(c.num_layers)},
    }
    outputs = {
        "top_scores": {"shape": ["batch", top_k], "dtype": "float32"},
        "top_ids": {"shape": ["batch", top_k], "dtype": "int64"},
        "scores": {"shape": ["batch", c.num_items + 1], "dtype": "float32"},
        **{name: {"shape": new, "dtype": "float32"} for name in new_names(c.num_layers)},
    }
    return {
        "file": STEP_FILE,
        "inputs": inputs,
        "outputs": outputs,
        "num_layers": c.num_layers,
        "num_kv_heads": c.num_kv_heads,
        "head_dim": c.head_dim,
        "max_positions": c.max_len,
        "state": "the caller keeps the cache: present = past followed by new (per layer, axis 2); "
                 "cached slots may come in any order (the mask marks the real ones)",
        "state_bytes_per_position": 2 * c.num_layers * c.num_kv_heads * c.head_dim * 4,
        "overflow": DEFAULT_OVERFLOW,  # what serving does past max_len (compress serve, predict --stateful)
        "overflow_policies": OVERFLOW_POLICIES,
        "opset": opset,
        "exporter": "legacy",
        "export_seconds": round(seconds, 2),
    }


def export_step(model: SequentialRecommender, folder: Path, top_k: int, opset: int, optimize: Any) -> dict[str, Any]:
    """Write `folder/step.onnx` (legacy torch.onnx exporter, checked, optimised by `optimize(raw, target)`)."""
    model = model.cpu().eval()
    graph = StepGraph(model, top_k).eval()
    c = model.config
    batch, past = 2, 3
    example = (
        torch.tensor([[1, 2], [0, 3]]).clamp(max=c.num_items),
        torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 0, 1]]),
        torch.tensor([[2, 3], [0, 3]]),
        torch.tensor([[1, 2, 0], [3, 1, 2]]).clamp(max=c.num_items),
        *[torch.randn(batch, c.num_kv_heads, past, c.head_dim) for _ in range(2 * c.num_layers)],
    )
    pasts, news = past_names(c.num_layers), new_names(c.num_layers)
    axes: dict[str, dict[int, str]] = {
        "item_ids": {0: "batch", 1: "new"},
        "attention_mask": {0: "batch", 1: "total"},
        "position_ids": {0: "batch", 1: "new"},
        "exclude_ids": {0: "batch", 1: "excluded"},
        **{name: {0: "batch", 2: "past"} for name in pasts},
        **{name: {0: "batch"} for name in STEP_OUTPUTS},
        **{name: {0: "batch", 2: "new"} for name in news},
    }
    folder = Path(folder)
    raw = folder / "step.raw.onnx"
    started = time.perf_counter()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the cache's shape checks, traced as constants
        torch.onnx.export(
            graph, example, str(raw), dynamo=False, opset_version=opset,
            input_names=[*STEP_INPUTS, *pasts], output_names=[*STEP_OUTPUTS, *news], dynamic_axes=axes,
        )
    seconds = time.perf_counter() - started
    try:
        onnx.checker.check_model(str(raw), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ArtifactError(f"the exported step graph fails onnx.checker: {exc}") from None
    optimize(raw, folder / STEP_FILE)
    raw.unlink()
    share_transposed_initializers(folder / STEP_FILE)
    return step_metadata(model, top_k, opset, seconds)


def step_parity(
    model: SequentialRecommender, folder: Path, data: SequenceData, users: int, k: int
) -> dict[str, Any]:
    """Replay the first `users` test histories (capped at max_len) through the ONNX step as a server runs it
    (a KVStore slot per user, `OnnxStepModel.advance`), one item per call from an empty state, batched; compare the scores after every event with the PyTorch full
    pass over the same prefix. Returns the max abs diff and the share of identical top-K."""
    step = OnnxStepModel(folder, "cpu")
    store = step.new_store(64)
    k = min(k, step.top_k)
    max_len = model.config.max_len
    histories = [history_and_target(data, u, "test")[0][-max_len:] for u in range(min(users, data.num_users))]
    histories = [h for h in histories if len(h)]
    worst, same, events = 0.0, 0, 0
    for start in range(0, len(histories), 64):
        group = histories[start : start + 64]
        store.clear(slice(None))
        for t in range(max(len(h) for h in group)):
            active = [i for i, h in enumerate(group) if t < len(h)]
            got = step.advance(store, active, [group[i][t : t + 1] for i in active], scores=True)
            prefixes = [group[i][: t + 1] for i in active]
            ids = torch.from_numpy(left_pad(prefixes, max_len))
            with torch.no_grad():
                ref = model.score(model.last_states(ids, (ids > 0).long())).numpy()
            diff = np.abs(got.scores[:, 1:] - ref[:, 1:]).max()
            worst = max(worst, float(diff))
            ref_masked = ref.copy()
            for row, prefix in enumerate(prefixes):
                ref_masked[row, prefix] = -np.inf
            ref_top = np.argsort(-ref_masked, axis=1, kind="stable")[:, :k]
            same += int(sum(set(a) == set(b[:k]) for a, b in zip(ref_top, got.top_ids)))
            events += len(active)
    return {"users": len(histories), "events": events, "max_abs_diff": worst, "k": k,
            "identical_topk": same / max(events, 1)}


def check_step_parity(report: dict[str, Any], max_abs_diff: float = MAX_ABS_DIFF) -> bool:
    """Whether the step matched the full pass; raise a ParityError naming the miss."""
    top, k = report["identical_topk"], report["k"]
    if report["max_abs_diff"] > max_abs_diff or top < 1.0:
        raise ParityError(
            f"the ONNX step model differs from the PyTorch full pass on {report['events']} events: "
            f"max |score diff| {report['max_abs_diff']:.2e} (max {max_abs_diff:.0e}), identical top-{k} {top:.4f}",
            "export without `incremental: true`, or report the model (the step path must equal the full pass)",
        )
    return True

"""The last layer at the last position only (compress/models/last_query.py) vs the full last layer.

Exports one model twice as the export stage does (dynamo exporter, opset 23, basic optimisation):
`full` runs every layer at every position and takes the last state (the graph before 2026-11-30),
`last-query` is today's `next_item_scores`. Checks that both rank alike on the same inputs, then
times both in this one process, rounds interleaved (batch 1 p50, batch-256 throughput), with
onnxruntime and with PyTorch.

    python benchmarks/last_query.py --model artifacts/ml1m/02-distill/model --out benchmarks/results/last_query
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from fused_attention import feeds as random_histories  # benchmarks/: left-padded random histories

from compress.export.onnx_export import _torch_export, optimize_onnx
from compress.models import SequentialRecommender, load_model
from compress.runs.artifacts import write_json
from compress.runtime.environment import versions
from compress.serve.onnx_model import import_onnxruntime


class Scores(nn.Module):
    """The model's scores over all items, from the last layer at every position (`full`) or at the last one."""

    def __init__(self, model: SequentialRecommender, full: bool) -> None:
        super().__init__()
        self.model, self.full = model, full

    def forward(self, item_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.full:
            return self.model.score(self.model(item_ids, attention_mask)[0][:, -1])
        return self.model.next_item_scores(item_ids, attention_mask)


def timed(call: Callable[[], object], calls: int) -> list[float]:
    for _ in range(max(2, calls // 10)):
        call()
    out = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        out.append(time.perf_counter() - started)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a saved model folder (config.json + weights)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=100, help="batch-1 calls per round")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ort = import_onnxruntime()
    model = load_model(args.model).eval()
    c = model.config
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    sessions, graphs = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, full in (("full", True), ("last-query", False)):
            graphs[name] = Scores(model, full).eval()
            raw, optimized = Path(tmp) / f"{name}-raw.onnx", Path(tmp) / f"{name}.onnx"
            _torch_export(graphs[name], raw, "dynamo", 23, c.max_len, ("scores",))
            optimize_onnx(raw, optimized, "basic")
            sessions[name] = ort.InferenceSession(str(optimized), options, providers=["CPUExecutionProvider"])
    feeds = random_histories(512, c.max_len, c.num_items, seed=0)
    ids, mask = feeds["item_ids"], feeds["attention_mask"]
    scores = {name: s.run(None, feeds)[0] for name, s in sessions.items()}
    with torch.no_grad():
        torch_scores = graphs["full"](torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    top = {name: np.argsort(-s[:, 1:], axis=1)[:, :10] for name, s in scores.items()}
    agreement = {
        "max_abs_score_diff_onnx": float(np.abs(scores["full"][:, 1:] - scores["last-query"][:, 1:]).max()),
        "max_abs_score_diff_vs_torch_full": float(np.abs(torch_scores[:, 1:] - scores["last-query"][:, 1:]).max()),
        "identical_top10_rows": float((top["full"] == top["last-query"]).all(axis=1).mean()),
    }
    one = [{"item_ids": ids[i : i + 1], "attention_mask": mask[i : i + 1]} for i in range(args.calls)]
    big = {"item_ids": ids[:256], "attention_mask": mask[:256]}
    engines = {
        "onnxruntime": lambda name, feed: sessions[name].run(None, feed),
        "pytorch": lambda name, feed: _torch_call(graphs[name], feed),
    }
    runs: dict[str, dict[str, list[float]]] = {}
    for _ in range(args.rounds):
        for name in sessions:
            for engine, call in engines.items():
                users = itertools.cycle(one)  # batch 1: a different history per call
                row = runs.setdefault(f"{engine}/{name}", {"p50_ms": [], "seq_per_s": []})
                row["p50_ms"].append(float(np.median(timed(lambda: call(name, next(users)), args.calls))) * 1e3)
                row["seq_per_s"].append(256 / float(np.median(timed(lambda: call(name, big), 3))))
    results = {name: {key: float(np.median(v)) for key, v in row.items()} for name, row in runs.items()}
    for engine in ("onnxruntime", "pytorch"):
        full, last = results[f"{engine}/full"], results[f"{engine}/last-query"]
        results[f"{engine}/ratio"] = {"p50_ms": last["p50_ms"] / full["p50_ms"],
                                      "seq_per_s": last["seq_per_s"] / full["seq_per_s"]}
    report = {"model": str(args.model), "shape": c.model_dump(exclude={"table"}), "threads": args.threads,
              "rounds": args.rounds, "agreement": agreement, "results": results, "versions": versions()}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "last_query.json", report)
    print(f"agreement: {agreement}")
    for name, row in results.items():
        print(f"{name:28s} p50 {row['p50_ms']:.3f}{'x' if 'ratio' in name else ' ms'}  "
              f"b256 {row['seq_per_s']:.3f}{'x' if 'ratio' in name else ' seq/s'}")


def _torch_call(graph: nn.Module, feed: dict[str, np.ndarray]) -> torch.Tensor:
    with torch.no_grad():
        return graph(torch.from_numpy(feed["item_ids"]), torch.from_numpy(feed["attention_mask"]))


if __name__ == "__main__":
    main()

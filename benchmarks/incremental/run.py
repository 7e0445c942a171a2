"""The incremental (KV-cached step) benchmark: speed at max_len 50 and 200, and the overflow policy's quality.

    # speed: a model of the small recipe's shape (random weights: speed does not depend on them),
    # exported with its step model, on ML-1M test users' real histories, one process
    python benchmarks/incremental/run.py speed --data /path/to/ml-1m.txt --max-len 50 200

    # quality of the overflow policy: replay each test user's whole history through the step model
    # of a trained run (its export stage has `incremental: true`) and compare NDCG@10 with full recompute
    python benchmarks/incremental/run.py policy artifacts/ml1m-incremental --refresh 0 10 25

Results go to benchmarks/results/incremental/ (speed.json, policy_<run>.json) and the tables
are printed as Markdown.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from compress.bench.incremental import ROW_COLUMNS, incremental_bench, incremental_rows
from compress.data import DataConfig, load_data
from compress.data.batching import history_and_target
from compress.evaluation.metrics import mask_history_items, metrics_from_ranks, target_ranks
from compress.export.onnx_export import ExportSettings, export_onnx
from compress.models import RecommenderConfig, SequentialRecommender
from compress.runs.layout import read_manifest
from compress.runtime.environment import versions
from compress.serve.locate import resolve_artifact
from compress.serve.onnx_model import OnnxRecommender
from compress.data.padding import left_pad
from compress.serve.step_model import OnnxStepModel, next_items

OUT = Path(__file__).resolve().parents[1] / "results" / "incremental"
SHAPE = {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 128, "dropout": 0.0}


def markdown(columns: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def speed(args: argparse.Namespace) -> None:
    results = []
    for max_len in args.max_len:
        data = load_data(DataConfig(source="file", path=args.data, format="pairs", max_len=max_len), 0)
        torch.manual_seed(0)
        model = SequentialRecommender(RecommenderConfig(**SHAPE, num_items=data.num_items, max_len=max_len)).eval()
        users = np.random.default_rng(1).permutation(data.num_users)[: args.requests]
        histories = [history_and_target(data, int(u), "test")[0][-max_len:] for u in users]
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "onnx"
            export_onnx(model, folder, ExportSettings(incremental=True), data.item_ids.tolist(), {"run": "bench"})
            print(f"max_len {max_len}: exported, measuring {len(histories)} requests", file=sys.stderr)
            result = incremental_bench(folder, histories, (1, 256), args.warmup, args.iterations,
                                       args.batch_iterations, args.threads)
        results.append(result)
        print(markdown(ROW_COLUMNS, incremental_rows(result)), flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    record = {"command": " ".join(sys.argv), "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "model": SHAPE | {"weights": "random (speed only)"}, "versions": versions(), "results": results}
    (OUT / "speed.json").write_text(json.dumps(record, indent=1) + "\n")


def replay(step: OnnxStepModel, histories: list[np.ndarray], refresh_every: int, batch: int = 256) -> np.ndarray:
    """Scores after each history's last item, fed one item at a time from an empty state under the
    overflow policy (compress.serve.step_model.next_items), a store slot per user as the server keeps them."""
    order = np.argsort([-len(h) for h in histories], kind="stable")
    out = np.zeros((len(histories), step.metadata["num_items"] + 1), np.float32)
    store = step.new_store(batch)
    for start in range(0, len(order), batch):
        group = [histories[i] for i in order[start : start + batch]]
        store.clear(slice(None))
        for t in range(len(group[0])):
            active = [i for i, h in enumerate(group) if len(h) > t]  # a prefix: longest first
            output = step.advance(store, active, [next_items(store, i, int(group[i][t]), refresh_every) for i in active],
                                  scores=True)
            for row, i in enumerate(active):
                if len(group[i]) == t + 1:
                    out[order[start + i]] = output.scores[row]
    return out


def policy(args: argparse.Namespace) -> None:
    run_dir = Path(args.run)
    recipe = read_manifest(run_dir)["recipe"]
    data_config = DataConfig.model_validate(recipe["data"] | ({"path": args.data} if args.data else {}))
    data = load_data(data_config, recipe["seed"])
    folder = resolve_artifact(run_dir, need_step=True)
    step, full = OnnxStepModel(folder, threads=args.threads), OnnxRecommender(folder, threads=args.threads)
    max_len = step.max_len
    users = np.arange(data.num_users)[: args.users] if args.users else np.arange(data.num_users)
    pairs = [history_and_target(data, int(u), "test") for u in users]
    histories = [h for h, _ in pairs]
    targets = torch.tensor([t for _, t in pairs])
    overflow = np.array([len(h) > max_len for h in histories])

    def ndcg(scores: np.ndarray) -> dict[str, float]:
        ranks = target_ranks(mask_history_items(torch.from_numpy(scores), histories, targets), targets).numpy()
        return {"all": metrics_from_ranks(ranks, [10])["ndcg@10"],
                "overflowing": metrics_from_ranks(ranks[overflow], [10])["ndcg@10"] if overflow.any() else None}

    started = time.perf_counter()
    recompute = np.concatenate([
        full.scores(ids := left_pad(histories[i : i + 256], max_len), (ids > 0).astype(np.int64))
        for i in range(0, len(histories), 256)
    ])
    rows = [{"policy": "full recompute (last max_len items)", "refresh_every": None, "ndcg@10": ndcg(recompute),
             "seconds": time.perf_counter() - started}]
    for k in args.refresh:
        started = time.perf_counter()
        scores = replay(step, histories, k)
        name = "slide (keep positions), never re-prefill" if k == 0 else f"slide, re-prefill every {k} overflowing events"
        top_same = float(np.mean([
            set(np.argsort(-a)[:10]) == set(np.argsort(-b)[:10])
            for a, b in zip(mask_history_items(torch.from_numpy(scores), histories, targets).numpy()[overflow],
                            mask_history_items(torch.from_numpy(recompute), histories, targets).numpy()[overflow])
        ])) if overflow.any() else None
        rows.append({"policy": name, "refresh_every": k, "ndcg@10": ndcg(scores),
                     "identical_top10_overflowing": top_same,
                     "max_abs_diff_fitting": float(np.abs(scores[~overflow, 1:] - recompute[~overflow, 1:]).max())
                     if (~overflow).any() else None,
                     "seconds": time.perf_counter() - started})
        print(f"{name}: NDCG@10 {rows[-1]['ndcg@10']} ({rows[-1]['seconds']:.0f}s)", file=sys.stderr, flush=True)
    record = {"command": " ".join(sys.argv), "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "run": run_dir.name,
              "artifact": str(folder), "max_len": max_len, "users": len(users),
              "overflowing_users": int(overflow.sum()), "model": recipe["stages"][0].get("model"),
              "epochs": recipe["stages"][0].get("epochs"), "rows": rows}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"policy_{run_dir.name}.json").write_text(json.dumps(record, indent=1) + "\n")
    table = [[r["policy"], f"{r['ndcg@10']['all']:.4f}",
              f"{r['ndcg@10']['overflowing']:.4f}" if r["ndcg@10"]["overflowing"] is not None else "-",
              f"{r['identical_top10_overflowing']:.3f}" if r.get("identical_top10_overflowing") is not None else "-"]
             for r in rows]
    print(markdown(["policy", "NDCG@10 (all test users)", f"NDCG@10 (the {int(overflow.sum())} overflowing)",
                    "identical top-10 vs recompute (overflowing)"], table))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--data", required=True, help="ML-1M ml-1m.txt (user item pairs)")
    s.add_argument("--max-len", type=int, nargs="+", default=[50, 200])
    s.add_argument("--requests", type=int, default=1024, help="test users whose histories are replayed")
    s.add_argument("--warmup", type=int, default=10)
    s.add_argument("--iterations", type=int, default=200)
    s.add_argument("--batch-iterations", type=int, default=10)
    s.add_argument("--threads", type=int, default=1)
    p = sub.add_parser("policy")
    p.add_argument("run", help="a run folder whose export stage has incremental: true")
    p.add_argument("--data", default=None, help="the data file, if the recipe's relative path does not resolve here")
    p.add_argument("--refresh", type=int, nargs="+", default=[0, 10, 25])
    p.add_argument("--users", type=int, default=0, help="first N test users (0: all)")
    p.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    (speed if args.command == "speed" else policy)(args)


if __name__ == "__main__":
    main()

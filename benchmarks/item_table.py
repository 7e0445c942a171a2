"""Item-table compression on a real dataset: size, NDCG@10 and ONNX latency per method.

Starts from the student that `recipes/studies/item_table_<dataset>.yaml` trains (2 layers, hidden 64;
run it first, or this script runs it), then for every method: the item_table stage
(compress.stages.item_table.run, with its recovery fine-tune), ONNX export behind the parity
gate (compress.export.onnx_export.export_and_check), full-ranking test metrics of the ONNX
graph with onnxruntime. Latency is measured in this one process for every method, rounds
interleaved (fp32 first in each round), on the serving path (`OnnxRecommender.topk`): batch-1
p50 and batch-256 throughput on real test histories padded to max_len; ratios are to fp32
measured in the same rounds. The rows measured (dataset and method) replace theirs in
benchmarks/results/item_table/item_table.json, the others stay; item_table.md is rewritten from all rows.

    python benchmarks/item_table.py --dataset ml1m   --data /work/shared/datasets/ml-1m.txt
    python benchmarks/item_table.py --dataset beauty --data /work/shared/datasets/Beauty.txt
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

RESULTS = Path(__file__).parent / "results" / "item_table"
ROOT = Path(__file__).resolve().parent.parent
QUICK_RECOVERY = {"epochs": 1, "max_steps_per_epoch": 20, "lr": 0.001}  # validated on every user
GENTLE_RECOVERY = {"epochs": 1, "max_steps_per_epoch": 100, "lr": 0.0001}  # 5x the steps at a tenth of the lr
FIXED = {"quantization_aware": False}
METHODS: dict[str, dict[str, Any] | None] = {
    "fp32": None,
    "rowwise int8": {"method": "rowwise", "bits": 8, "recovery": None},
    "rowwise int4": {"method": "rowwise", "bits": 4, "recovery": QUICK_RECOVERY},
    "rowwise int4, codes fixed": {"method": "rowwise", "bits": 4, "recovery": QUICK_RECOVERY, **FIXED},
    "rowwise int3": {"method": "rowwise", "bits": 3, "recovery": QUICK_RECOVERY},
    "mixed int8/int4": {"method": "mixed", "high_bits": 8, "low_bits": 4, "coverage": 0.8, "recovery": QUICK_RECOVERY},
    "mixed int4/int3, 4 bits": {"method": "mixed", "high_bits": 4, "low_bits": 3, "bits_per_weight": 4.0,
                                "recovery": QUICK_RECOVERY},
    "mixed int4/int3, 4 bits, codes fixed": {"method": "mixed", "high_bits": 4, "low_bits": 3, "bits_per_weight": 4.0,
                                             "recovery": QUICK_RECOVERY, **FIXED},
    "mixed int4/int3, 4 bits, no clip": {"method": "mixed", "high_bits": 4, "low_bits": 3, "bits_per_weight": 4.0,
                                         "recovery": QUICK_RECOVERY, "clip": False},
    "mixed int4/int3, 4 bits, no clip, gentle recovery": {"method": "mixed", "high_bits": 4, "low_bits": 3,
                                                           "bits_per_weight": 4.0, "recovery": GENTLE_RECOVERY,
                                                           "clip": False},
    "mixed int4/int3, 4 bits, no clip, codes fixed, gentle recovery": {
        "method": "mixed", "high_bits": 4, "low_bits": 3, "bits_per_weight": 4.0, "recovery": GENTLE_RECOVERY,
        "clip": False, **FIXED},
    "mixed int4/int3, 4 bits, no clip, by error": {"method": "mixed", "high_bits": 4, "low_bits": 3,
                                                   "bits_per_weight": 4.0, "allocation": "error",
                                                   "recovery": QUICK_RECOVERY, "clip": False},
    "mixed int4/int3, 4 bits, by error": {"method": "mixed", "high_bits": 4, "low_bits": 3, "bits_per_weight": 4.0,
                                          "allocation": "error", "recovery": QUICK_RECOVERY},
    "mixed int4/int2, 4 bits, no clip": {"method": "mixed", "high_bits": 4, "low_bits": 2, "bits_per_weight": 4.0,
                                         "recovery": QUICK_RECOVERY, "clip": False},
    "mixed int4/int2": {"method": "mixed", "high_bits": 4, "low_bits": 2, "coverage": 0.8, "recovery": QUICK_RECOVERY},
    "lowrank r=16": {"method": "lowrank", "rank": 16, "recovery": QUICK_RECOVERY},
    "lowrank r=8": {"method": "lowrank", "rank": 8, "recovery": QUICK_RECOVERY},
}


def student(recipe_path: Path, data_path: str) -> tuple[Any, Path]:
    """The recipe (data pointed at `data_path`) and its trained train-stage model folder (trained if missing)."""
    from compress.pipeline import RunOptions, run_recipe
    from compress.recipe import load_recipe

    overrides = [f"data.path={data_path}", "bench.enabled=false", "report=false"]
    recipe = load_recipe(recipe_path, overrides + ["stages=[" + json.dumps(_train_stage(recipe_path)) + "]"])
    folder = recipe.output_dir / recipe.name / "01-train" / "model"
    if not (folder.parent / "stage.json").is_file():
        run_recipe(recipe, RunOptions(show_progress=False))
    return recipe, folder


def _train_stage(recipe_path: Path) -> dict[str, Any]:
    import yaml

    return next(s for s in yaml.safe_load(recipe_path.read_text())["stages"] if s["stage"] == "train")


def compress_and_export(name: str, spec: dict | None, recipe, data, source: Path, work: Path) -> dict[str, Any]:
    """Run the item_table stage (unless fp32), export with the parity gate, evaluate the ONNX graph."""
    from compress.evaluation.config import ParityConfig
    from compress.evaluation.metrics import evaluate_scores
    from compress.evaluation.scoring import onnx_scores
    from compress.export.onnx_export import ExportSettings, export_and_check
    from compress.models import load_model
    from compress.runs.code_version import code_fingerprint
    from compress.serve.onnx_model import OnnxRecommender
    from compress.stages import item_table
    from compress.handlers import TorchArtifact
    from compress.stages.base import StageContext
    from compress.stages.config import ItemTableConfig

    folder = work / name.replace(", ", "_").replace(" ", "_").replace("/", "-").replace("=", "")
    key = {"spec": spec, "source": str(source), "code": code_fingerprint()}  # what the folder's results depend on
    if folder.exists() and (not (folder / "key.json").is_file() or json.loads((folder / "key.json").read_text()) != key):
        shutil.rmtree(folder)  # another method spec, student or package version: recompute, re-export
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "key.json").write_text(json.dumps(key))
    info: dict[str, Any] = {}
    model_folder = source
    if spec is not None:
        done = folder / "stage_info.json"
        if not done.is_file():
            ctx = StageContext(data=data, max_len=recipe.data.max_len, eval_config=recipe.eval, device=torch.device("cpu"),
                               seed=recipe.seed, folder=folder, log=lambda m: print(f"  [{name}] {m}", flush=True),
                               show_progress=False)
            result = item_table.run(ctx, ItemTableConfig(**spec), TorchArtifact(source))
            done.write_text(json.dumps({k: v for k, v in result.info.items() if k != "history"}, indent=1))
        info = json.loads(done.read_text())
        model_folder = folder / "model"
    onnx_folder = folder / "onnx"
    if not (onnx_folder / "parity.json").is_file():
        model = load_model(model_folder)
        export_and_check(model, onnx_folder, ExportSettings(top_k=10, exporter="legacy"), ParityConfig(), data,
                         data.item_ids.tolist(), {"benchmark": "item_table", "method": name}, print)
    exported = OnnxRecommender(onnx_folder, "cpu")
    metrics = evaluate_scores(onnx_scores(exported), data, "test", recipe.eval, exported.max_len)
    torch_model = load_model(model_folder)
    fp32_bytes = (torch_model.config.num_items + 1) * torch_model.config.item_dim * 4
    return {
        "method": name,
        "table_bytes": info.get("table_bytes", fp32_bytes),
        "table_bytes_fp32": fp32_bytes,
        "onnx_file_bytes": (onnx_folder / "model.onnx").stat().st_size,
        "ndcg@10": metrics["ndcg@10"],
        "hr@10": metrics["hr@10"],
        "ndcg@10_before_recovery": info.get("metrics_before_recovery", {}).get("ndcg@10"),
        "valid_ndcg@10_before_recovery": info.get("recovery_valid_ndcg@10_before"),
        "valid_ndcg@10_after_recovery": info.get("recovery_valid_ndcg@10_after"),
        "recovery_kept": info.get("recovery_kept"),
        "quantization_aware_recovery": info.get("quantization_aware_recovery"),
        "bits_per_weight": round(info.get("table_bytes", fp32_bytes) * 8 / (fp32_bytes / 4), 3),
        "recovery": (spec or {}).get("recovery") is not None,
        "parity": json.loads((onnx_folder / "parity.json").read_text()),
        "config": spec,
        "onnx": str(onnx_folder),
    }


def measure_latency(rows: list[dict], data, max_len: int, rounds: int, iterations: int, threads: int) -> None:
    """Batch-1 p50 and batch-256 throughput of every row's ONNX graph (topk), rounds interleaved; medians."""
    from compress.bench.timing import make_batch, test_histories, time_calls
    from compress.serve.onnx_model import OnnxRecommender

    models = {r["method"]: OnnxRecommender(Path(r["onnx"]), "cpu", threads=threads) for r in rows}
    histories = test_histories(data, max_len, iterations + 5, seed=0)
    singles = [make_batch([h], "fixed", max_len) for h in histories]
    big = [make_batch(test_histories(data, max_len, 256, seed=s), "fixed", max_len) for s in range(4)]
    p50: dict[str, list[float]] = {r["method"]: [] for r in rows}
    rate: dict[str, list[float]] = {r["method"]: [] for r in rows}
    for _ in range(rounds):
        for method, model in models.items():
            p50[method].append(float(np.median(time_calls(lambda b: model.topk(*b), singles, warmup=5).wall_ms)))
            rate[method].append(256 / (float(np.median(time_calls(lambda b: model.topk(*b), big, warmup=1).wall_ms)) / 1000))
    for row in rows:
        row["p50_ms_batch1"] = round(float(np.median(p50[row["method"]])), 3)
        row["seq_per_s_batch256"] = round(float(np.median(rate[row["method"]])), 1)
        row["p50_ratio"] = round(float(np.median(np.array(p50[row["method"]]) / np.array(p50["fp32"]))), 3)
        row["throughput_ratio"] = round(float(np.median(np.array(rate[row["method"]]) / np.array(rate["fp32"]))), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="ml1m | beauty (recipes/studies/item_table_<dataset>.yaml)")
    parser.add_argument("--data", required=True, help="the dataset file")
    parser.add_argument("--recipe", type=Path, help="default: recipes/studies/item_table_<dataset>.yaml")
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--recovery-eval-users", type=int, help="validate the recovery on the first N users (default: all)")
    parser.add_argument("--work", type=Path, default=ROOT / "artifacts" / "item_table_bench")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    from compress.data import load_data

    torch.set_num_threads(args.threads)
    recipe, source = student(args.recipe or ROOT / "recipes" / "studies" / f"item_table_{args.dataset}.yaml", args.data)
    data = load_data(recipe.data, recipe.seed)
    rows = []
    for name in ["fp32"] + [m for m in args.methods if m != "fp32"]:
        print(f"{args.dataset}: {name}", flush=True)
        spec = METHODS[name]
        if spec is not None and spec["recovery"] is not None and args.recovery_eval_users:
            spec = {**spec, "recovery": {**spec["recovery"], "eval_users": args.recovery_eval_users}}
        rows.append(compress_and_export(name, spec, recipe, data, source, args.work / args.dataset))
    measure_latency(rows, data, recipe.data.max_len, args.rounds, args.iterations, args.threads)
    base = rows[0]
    for row in rows:
        row["dataset"] = args.dataset
        row["table_bytes_ratio"] = round(row["table_bytes"] / base["table_bytes"], 4)
        row["ndcg_ratio"] = round(row["ndcg@10"] / base["ndcg@10"], 4)
        row["threads"] = args.threads
        row.pop("onnx")
    write(args.out, args.dataset, rows)


def write(out: Path, dataset: str, rows: list[dict]) -> None:
    """Replace those rows of item_table.json (same dataset and method) that `rows` measured; keep the
    others; rewrite item_table.md from every row."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "item_table.json"
    old = json.loads(path.read_text())["rows"] if path.is_file() else []
    measured = {r["method"] for r in rows}
    everything = [r for r in old if r["dataset"] != dataset or r["method"] not in measured] + rows
    everything.sort(key=lambda r: (r["dataset"] != "ml1m", r["dataset"], list(METHODS).index(r["method"])
                                   if r["method"] in METHODS else len(METHODS)))
    path.write_text(json.dumps({"rows": everything}, indent=1) + "\n")
    (out / "item_table.md").write_text(markdown(everything))
    print((out / "item_table.md").read_text())


def markdown(rows: list[dict]) -> str:
    lines = [
        "| dataset | method | bits/weight | table bytes | smaller | NDCG@10 | NDCG ratio | before recovery "
        "| valid before -> after recovery | p50 ms, batch 1 (ratio) | seq/s, batch 256 (ratio) | top-10 overlap vs PyTorch |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        before = f"{r['ndcg@10_before_recovery']:.4f}" if r.get("ndcg@10_before_recovery") is not None else "-"
        valid = "-"
        if r.get("valid_ndcg@10_before_recovery") is not None:
            kept = "recovered" if r["recovery_kept"] else "before"
            valid = f"{r['valid_ndcg@10_before_recovery']:.4f} -> {r['valid_ndcg@10_after_recovery']:.4f} (kept {kept})"
        bits = r.get("bits_per_weight", 32 * r["table_bytes_ratio"])
        lines.append(
            f"| {r['dataset']} | {r['method']} | {bits:.2f} | {r['table_bytes']:,} | {1 / r['table_bytes_ratio']:.2f}x | "
            f"{r['ndcg@10']:.4f} | {r['ndcg_ratio']:.4f} | {before} | {valid} | {r['p50_ms_batch1']:.2f} ({r['p50_ratio']:.2f}x) | "
            f"{r['seq_per_s_batch256']:,.0f} ({r['throughput_ratio']:.2f}x) | {r['parity']['overlap@10']:.4f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

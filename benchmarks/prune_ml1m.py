"""Pruning table: depth-only, width-only and both, each before pruning, after pruning and after
recovery (test metrics, parameters, batch-1 CPU latency), from a run folder with a trained teacher.

    python benchmarks/prune_ml1m.py --run artifacts/ml1m
    python benchmarks/prune_ml1m.py --run artifacts/ml1m --target-params 0.5 --recovery-epochs 5 --threads 1

Every variant prunes the same teacher to the same parameter budget (`target_params`), shrinking
only its dimensions: depth = layers (Block Influence), width = kv groups + MLP channels
(torch-pruning, magnitude importance), both = all three. Each is a recipe `load teacher -> prune`
run into --runs (cached on rerun); then one benchmark session measures the teacher and every
pruned model in this process. Latency is a property of the shape, so "after pruning" and
"after recovery" share one measurement. Writes prune.json + prune.md under --results/<name>/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from compress.runs.files import write_json
from compress.bench.config import BenchConfig
from compress.bench.session import BenchSession
from compress.runs.run_data import load_run_data
from compress.pipeline import RunOptions, run_recipe
from compress.recipe import validate_recipe
from compress.runs.layout import read_manifest
from compress.handlers import TorchArtifact

HERE = Path(__file__).resolve().parent
VARIANTS: dict[str, list[str]] = {"depth": ["layers"], "width": ["heads", "mlp"], "both": ["layers", "heads", "mlp"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="run folder holding the teacher, e.g. artifacts/ml1m")
    parser.add_argument("--stage", default="train", help="name of the teacher's stage in that run (default: train)")
    parser.add_argument("--target-params", type=float, default=0.6, help="fraction of the teacher's parameters kept")
    parser.add_argument("--recovery-epochs", type=int, default=3, help="recovery epochs (KD from the teacher)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--threads", type=int, default=None, help="CPU threads while timing (default: torch's)")
    parser.add_argument("--iterations", type=int, default=50, help="timed batch-1 calls per model")
    parser.add_argument("--runs", type=Path, default=HERE / "runs", help="where the prune runs are written")
    parser.add_argument("--results", type=Path, default=HERE / "results", help="where the table is written")
    args = parser.parse_args()

    manifest = read_manifest(args.run)
    teacher = _teacher_folder(args.run, manifest, args.stage)
    name = f"prune_{manifest['name']}"
    rows: list[dict[str, Any]] = []
    runs = {v: _prune_run(manifest["recipe"], teacher, v, args) for v in args.variants}

    recipe = manifest["recipe"]
    data = load_run_data(args.run, manifest)
    session = BenchSession(
        BenchConfig(iterations=args.iterations, threads=args.threads, batch_size_throughput=8, throughput_iterations=1),
        torch.device("cpu"), data, recipe["data"]["max_len"],
    )
    teacher_ms = session.measure(TorchArtifact(teacher))["latency_ms"]["fixed"]["p50"]
    for variant, (loaded, pruned, folder) in runs.items():
        pruned_ms = session.measure(TorchArtifact(folder))["latency_ms"]["fixed"]["p50"]
        info = pruned["info"]
        rows += [
            _row(variant, "before pruning", loaded["params"], loaded["metrics"], teacher_ms),
            _row(variant, "after pruning", info["params_after"], info["metrics_before_recovery"], pruned_ms),
            _row(variant, "after recovery", pruned["params"], pruned["metrics"], pruned_ms),
        ]
        rows[-1]["shape"] = {k: info[k] for k in ("layers_kept", "heads_kept", "kv_heads_kept", "mlp_channels_kept")}

    out = args.results / name
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "prune.json", {"teacher": str(teacher), "target_params": args.target_params,
                                    "recovery_epochs": args.recovery_epochs, "environment": session.environment,
                                    "rows": rows})
    table = _markdown(rows, args, session.environment)
    (out / "prune.md").write_text(table)
    print(table)
    print(f"results: {out}")
    return 0


def _teacher_folder(run: Path, manifest: dict[str, Any], stage: str) -> Path:
    entries = [e for e in manifest["stages"] if e["name"] == stage and e["kind"] == "torch"]
    if not entries:
        raise SystemExit(f"{run}: no finished torch stage named {stage!r} (have {[e['name'] for e in manifest['stages']]})")
    return (run / entries[0]["output"]).resolve()


def _base(recipe: dict[str, Any], variant: str, runs: Path, teacher: Path) -> dict[str, Any]:
    """The teacher run's data and evaluation settings, a `load` of its teacher, no per-stage bench."""
    return {
        "name": f"prune_{recipe['name']}_{variant}",
        "seed": recipe["seed"],
        "device": recipe["device"],
        "output_dir": str(runs),
        "data": recipe["data"],
        "eval": recipe["eval"],
        "bench": {"enabled": False},
        "stages": [{"stage": "load", "path": str(teacher)}],
    }


def _prune_run(recipe: dict[str, Any], teacher: Path, variant: str, args: argparse.Namespace):
    raw = _base(recipe, variant, args.runs, teacher)
    raw["stages"].append({
        "stage": "prune",
        "target_params": args.target_params,
        "budget_dims": VARIANTS[variant],
        "recovery": {"epochs": args.recovery_epochs},
    })
    manifest = run_recipe(validate_recipe(raw, f"{variant} prune recipe"), RunOptions(show_progress=False))
    loaded, pruned = manifest["stages"]
    return loaded, pruned, Path(raw["output_dir"]) / raw["name"] / pruned["output"]


def _row(variant: str, phase: str, params: int, metrics: dict[str, float], p50_ms: float) -> dict[str, Any]:
    return {"variant": variant, "phase": phase, "params": params, "ndcg@10": metrics["ndcg@10"],
            "hr@10": metrics["hr@10"], "latency_p50_ms": p50_ms}


def _markdown(rows: list[dict[str, Any]], args: argparse.Namespace, environment: dict[str, Any]) -> str:
    lines = [
        f"Pruning to {args.target_params:.0%} of the teacher's parameters ({args.run}); recovery "
        f"{args.recovery_epochs} epochs of KD. Test split, full ranking; batch-1 p50 latency at max length on "
        f"{environment.get('cpu', 'cpu')}, {environment.get('torch_threads')} torch threads.",
        "",
        "| variant | phase | params | NDCG@10 | HR@10 | p50 ms | shape |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        shape = row.get("shape")
        shape_text = (f"layers {len(shape['layers_kept'])}, heads {shape['heads_kept']} "
                      f"(kv {shape['kv_heads_kept']}), MLP {shape['mlp_channels_kept']}") if shape else ""
        lines.append(f"| {row['variant']} | {row['phase']} | {row['params']:,} | {row['ndcg@10']:.4f} | "
                     f"{row['hr@10']:.4f} | {row['latency_p50_ms']:.2f} | {shape_text} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())

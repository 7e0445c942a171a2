"""Fused vs unfused attention in onnxruntime, and which int8 settings pay, on one model shape.

Exports one model (random weights: speed and score agreement do not depend on training) with the
legacy exporter (opset 17: attention spelled out as Where/MatMul/Softmax/MatMul) and the dynamo
exporter (opset 23: one ONNX Attention op per layer, RMSNormalization), at each onnxruntime
optimisation level; then int8 variants of the fused graph (dynamic per-tensor / per-channel /
reduce_range, static QDQ on MatMul). Every graph is timed in this one process, at batch 1 and
batch 256, rounds interleaved so machine noise hits all alike; scores are compared with PyTorch.

    python benchmarks/fused_attention.py --max-len 50 --out benchmarks/results/fused_attention
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch

from compress.export.onnx_export import RankingGraph, _torch_export, optimize_onnx
from compress.export.graph import share_transposed_initializers
from compress.export.quantize import quantize_onnx
from compress.models import RecommenderConfig, SequentialRecommender
from compress.runs.artifacts import write_json
from compress.runtime.environment import versions
from compress.serve.onnx_model import FORMAT, METADATA_FILE, MODEL_FILE, import_onnxruntime


def feeds(batch: int, max_len: int, num_items: int, seed: int) -> dict[str, np.ndarray]:
    """Left-padded histories of random lengths between max_len / 3 and max_len."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(max(2, max_len // 3), max_len + 1, batch)
    mask = (np.arange(max_len)[None, :] >= max_len - lengths[:, None]).astype(np.int64)
    return {"item_ids": rng.integers(1, num_items + 1, (batch, max_len)) * mask, "attention_mask": mask}


def build_graphs(model: SequentialRecommender, folder: Path, calibration: list[dict]) -> dict[str, Path]:
    """Every variant's model.onnx, in its own folder (with the metadata quantize_onnx reads)."""
    ranking = RankingGraph(model, 10).eval()
    graphs: dict[str, Path] = {}
    for exporter, opset in (("legacy", 17), ("dynamo", 23)):
        raw = folder / f"{exporter}.onnx"
        _torch_export(ranking, raw, exporter, opset, model.config.max_len)
        for level in ("basic", "extended"):
            out = folder / f"{exporter}{opset}-{level}"
            out.mkdir()
            optimize_onnx(raw, out / MODEL_FILE, level)
            share_transposed_initializers(out / MODEL_FILE)  # as export_onnx does: the tied table once
            write_json(out / METADATA_FILE, {
                "format": FORMAT, "num_items": model.config.num_items, "max_len": model.config.max_len,
                "top_k": 10, "item_ids": list(range(1, model.config.num_items + 1)),
            })
            graphs[f"{exporter} opset {opset}, {level}"] = out / MODEL_FILE
    fused = folder / "dynamo23-basic"
    int8 = {
        "int8 dynamic, per-tensor": dict(mode="dynamic", per_channel=False),
        "int8 dynamic, per-channel": dict(mode="dynamic", per_channel=True),
        "int8 dynamic, per-channel, reduce_range": dict(mode="dynamic", per_channel=True, reduce_range=True),
        "int8 static QDQ (MatMul), per-channel": dict(mode="static", per_channel=True, calibration=calibration),
    }
    for name, options in int8.items():
        out = folder / name.replace(" ", "_").replace(",", "").replace("(", "").replace(")", "")
        quantize_onnx(fused, out, **options)
        graphs[f"fused + {name}"] = out / MODEL_FILE
    return graphs


def time_session(session, inputs: dict[str, np.ndarray], calls: int) -> float:
    """Median seconds per call over `calls` calls, after one warm-up call."""
    session.run(["top_ids"], inputs)
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        session.run(["top_ids"], inputs)
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--items", type=int, default=3416, help="catalogue size (ML-1M: 3416)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/fused_attention"))
    args = parser.parse_args()
    ort = import_onnxruntime()
    torch.manual_seed(0)
    config = RecommenderConfig(
        num_items=args.items, hidden_size=args.hidden, num_layers=args.layers, num_heads=4, num_kv_heads=2,
        intermediate_size=2 * args.hidden, max_len=args.max_len, dropout=0.0,
    )
    model = SequentialRecommender(config).eval()
    big, one = feeds(256, args.max_len, args.items, 0), feeds(1, args.max_len, args.items, 1)
    with torch.no_grad():
        reference = RankingGraph(model, 10)(torch.from_numpy(big["item_ids"]), torch.from_numpy(big["attention_mask"]))
    reference_ids = reference[1].numpy()
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    with tempfile.TemporaryDirectory() as scratch:
        graphs = build_graphs(model, Path(scratch), [feeds(32, args.max_len, args.items, 2)])
        sessions = {name: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                    for name, path in graphs.items()}
        ops = {name: sorted({n.op_type for n in onnx.load(str(path)).graph.node}) for name, path in graphs.items()}
        timings: dict[str, dict[str, list[float]]] = {name: {"b1": [], "b256": []} for name in graphs}
        for _ in range(args.rounds):  # interleaved: each round times every graph once
            for name, session in sessions.items():
                timings[name]["b1"].append(time_session(session, one, 50))
                timings[name]["b256"].append(time_session(session, big, 5))
        rows = []
        for name, session in sessions.items():
            top_ids = session.run(["top_ids"], big)[0]
            overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top_ids, reference_ids)])
            rows.append({
                "graph": name,
                "p50_ms_batch1": round(1000 * float(np.median(timings[name]["b1"])), 3),
                "seq_per_s_batch256": round(256 / float(np.median(timings[name]["b256"])), 1),
                "top10_overlap_vs_torch": round(float(overlap), 4),
                "fused_attention": "Attention" in ops[name],
                "bytes": graphs[name].stat().st_size,
            })
    base = rows[0]
    for row in rows:
        row["batch1_speedup_vs_legacy"] = round(base["p50_ms_batch1"] / row["p50_ms_batch1"], 2)
        row["batch256_speedup_vs_legacy"] = round(row["seq_per_s_batch256"] / base["seq_per_s_batch256"], 2)
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"fused_attention_len{args.max_len}"
    result = {"model": config.model_dump(), "threads": args.threads, "rounds": args.rounds,
              "environment": versions(), "rows": rows}
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# Fused attention and int8 in onnxruntime: max_len {args.max_len}, hidden {args.hidden}, "
             f"{args.layers} layers, {args.items} items, {args.threads} threads",
             "", "| graph | p50 ms, batch 1 | seq/s, batch 256 | vs legacy (b1, b256) | top-10 overlap vs torch | MiB |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['graph']} | {r['p50_ms_batch1']:.2f} | {r['seq_per_s_batch256']:,.0f} | "
              f"{r['batch1_speedup_vs_legacy']:.2f}x, {r['batch256_speedup_vs_legacy']:.2f}x | "
              f"{r['top10_overlap_vs_torch']:.3f} | {r['bytes'] / 2**20:.2f} |" for r in rows]
    (args.out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

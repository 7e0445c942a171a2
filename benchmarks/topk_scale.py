"""Top-K inside the ONNX graph at 100k and 1M items: full scoring vs chunked running top-K.

For every catalogue size a random recommender (hidden 64, 2 layers, max_len 50) is exported
(compress.export.onnx_export) as:
- `full`: today's graph, [batch, items + 1] scores, then TopK;
- `chunked C`: `item_chunk: C`, an ONNX Loop keeping a running top-(K + L), no score matrix;
- `chunked C, int8 table`: the same with the item table stored row-wise int8 (in-graph dequantisation).
Each is measured in a fresh process with onnxruntime (`OnnxRecommender.topk`, K = 10, random
histories of 50 items): batch-1 latency (p50 of `--iterations` calls), batch-256 latency (median of 3) and
peak memory (growth of the process's peak RSS while it runs batch 256, the loaded model
excluded; Linux VmHWM reset through /proc/self/clear_refs). Exactness: the chunked top-10 ids
against the full graph's on the same 256 users (recall@10, 1.0 = identical sets).
Results: benchmarks/results/item_table/topk_scale.{json,md}.

    python benchmarks/topk_scale.py                      # 100k and 1M items
    python benchmarks/topk_scale.py --items 100000 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from scaling import run_child, status_kib, write_results

RESULTS = Path(__file__).parent / "results" / "item_table"
HIDDEN, MAX_LEN, TOP_K = 64, 50, 10


def variants(chunks: list[int]) -> dict[str, dict]:
    """Name -> (item_chunk, table bits) of every exported graph."""
    out = {"full": {"chunk": None, "bits": None}}
    out |= {f"chunked {c}": {"chunk": c, "bits": None} for c in chunks}
    out[f"chunked {chunks[0]}, int8 table"] = {"chunk": chunks[0], "bits": 8}
    return out


def export(items: int, name: str, spec: dict, folder: Path) -> None:
    """Export a random model over `items` items as variant `spec` into `folder` (skipped if there)."""
    if (folder / "model.onnx").is_file():
        return
    import numpy as np
    import torch

    from compress.export.onnx_export import ExportSettings, export_onnx
    from compress.methods.item_table import compressed_spec, quantized_table
    from compress.models import RecommenderConfig, SequentialRecommender

    torch.manual_seed(0)
    config = RecommenderConfig(hidden_size=HIDDEN, num_layers=2, num_heads=4, intermediate_size=4 * HIDDEN,
                               num_items=items, max_len=MAX_LEN, dropout=0.0)
    model = SequentialRecommender(config).eval()
    if spec["bits"] is not None:
        weight = model.item_embeddings.weight.detach()
        table = quantized_table(weight, [spec["bits"]], np.zeros(len(weight), dtype=np.int64))
        compressed = SequentialRecommender(config.model_copy(update={"table": compressed_spec(table)}))
        state = {k: v for k, v in model.state_dict().items() if not k.startswith("item_embeddings.")}
        compressed.load_state_dict(state | {f"item_embeddings.{k}": v for k, v in table.state_dict().items()})
        model = compressed.eval()
    settings = ExportSettings(top_k=TOP_K, item_chunk=spec["chunk"], exporter="legacy")  # as measured
    export_onnx(model, folder, settings, list(range(1, items + 1)), {"benchmark": "topk_scale", "variant": name})


def inputs(items: int, batch: int, seed: int = 0):
    import numpy as np

    ids = np.random.default_rng(seed).integers(1, items + 1, size=(batch, MAX_LEN)).astype(np.int64)
    return ids, np.ones_like(ids)


def measure(folder: Path, items: int, iterations: int, threads: int) -> dict:
    """Batch-1 p50, batch-256 seconds and peak RSS growth of `topk` in this process."""
    import numpy as np

    from compress.bench.timing import time_calls
    from compress.serve.onnx_model import OnnxRecommender

    model = OnnxRecommender(folder, "cpu", threads=threads)
    one, big = inputs(items, 1), inputs(items, 256)
    # one warm-up call (onnxruntime allocates its arenas on first use), then `iterations` timed ones
    batch1 = time_calls(lambda batch: model.topk(*batch), [one] * (1 + iterations), warmup=1)
    before = status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
    last: dict = {}
    # the median of 3 batches (the machine is shared); the last call's top ids are kept for recall
    batch256 = time_calls(lambda batch: last.update(top=model.topk(*batch)), [big] * 3, warmup=0)
    top_ids = last["top"][1]
    seconds = float(np.median(batch256.wall_ms)) / 1000
    return {
        "p50_ms_batch1": round(float(np.median(batch1.wall_ms)), 2),
        "seconds_batch256": round(seconds, 3), "seq_per_s_batch256": round(256 / seconds, 1),
        "peak_rss_growth_mib_batch256": round((status_kib("VmHWM") - before) / 1024, 1),
        "rss_loaded_mib": round(before / 1024, 1),
        "file_mib": round((folder / "model.onnx").stat().st_size / 2**20, 1),
        "top_ids": top_ids.tolist(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--chunks", type=int, nargs="+", default=[16384, 65536])
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, help="exported graphs, reused when there (default: a new temp folder, "
                        "so graphs of an older version are never measured)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--one", nargs=3, metavar=("STEP", "ITEMS", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.work is None:
        args.work = Path(tempfile.mkdtemp(prefix="compress-topk-scale-"))
    specs = variants(args.chunks)
    if args.one:
        step, items, name = args.one[0], int(args.one[1]), args.one[2]
        folder = args.work / f"{items}" / name.replace(" ", "_").replace(",", "")
        if step == "export":
            export(items, name, specs[name], folder)
            print(json.dumps({"exported": str(folder)}))
        else:
            print(json.dumps(measure(folder, items, args.iterations, args.threads)))
        return

    rows = []
    for items in args.items:
        full_ids = None
        for name in specs:
            base = [sys.executable, __file__, "--work", str(args.work), "--iterations", str(args.iterations),
                    "--threads", str(args.threads), "--chunks", *map(str, args.chunks), "--one"]
            env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
            if run_child(base + ["export", str(items), name], f"export {items} {name}", env) is None:
                continue
            row = run_child(base + ["measure", str(items), name], f"measure {items} {name}", env)
            if row is None:
                continue
            top_ids = row.pop("top_ids")
            if name == "full":
                full_ids = top_ids
            recall = None if full_ids is None else sum(
                len(set(a) & set(b)) for a, b in zip(top_ids, full_ids)) / (TOP_K * len(full_ids))
            rows.append({"items": items, "variant": name, "threads": args.threads, "top_k": TOP_K,
                         "recall@10_vs_full": recall, **row})
            print(json.dumps(rows[-1]), flush=True)
    write_results(args.out, "topk_scale", rows, markdown)


def markdown(rows: list[dict]) -> str:
    lines = [
        "# Top-10 inside the ONNX graph over large catalogues (CPU, onnxruntime)",
        "",
        f"Random recommender (hidden {HIDDEN}, 2 layers), histories of {MAX_LEN} items, "
        f"{rows[0]['threads']} onnxruntime thread(s), one fresh process per row (`python benchmarks/topk_scale.py`). "
        "Peak memory: growth of the process's peak RSS while it ranks a batch of 256 (the loaded model "
        "excluded; `loaded` is the process RSS with the model loaded). Recall: the top-10 ids against the "
        "full graph's on the same users (1.0 = the same sets).",
        "",
        "| items | graph | file MiB | loaded MiB | p50 ms, batch 1 | seconds, batch 256 | seq/s, batch 256 "
        "| peak memory growth, batch 256 (MiB) | recall@10 vs full |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        recall = "-" if r["recall@10_vs_full"] is None or r["variant"] == "full" else f"{r['recall@10_vs_full']:.4f}"
        lines.append(f"| {r['items']:,} | {r['variant']} | {r['file_mib']:,.1f} | {r['rss_loaded_mib']:,.0f} | "
                     f"{r['p50_ms_batch1']:.2f} | {r['seconds_batch256']:.2f} | {r['seq_per_s_batch256']:,.0f} | "
                     f"{r['peak_rss_growth_mib_batch256']:,.1f} | {recall} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

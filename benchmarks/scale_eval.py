"""Peak memory and time of full-ranking evaluation as the catalogue grows: chunked vs unchunked.

For every catalogue size, a fresh process builds random user sequences and a randomly
initialised recommender over that many items, then runs `evaluate_model` (full ranking,
history masked) once with `eval.item_chunk` (chunked) and once with one chunk holding the
whole catalogue (unchunked: the [batch, num_items + 1] score matrix at once). Peak memory is
the growth of the process's peak RSS during the evaluation (Linux: VmHWM, reset through
/proc/self/clear_refs just before). Results: benchmarks/results/scale/scale_eval.{json,md}.

    python benchmarks/scale_eval.py                       # 10k, 100k, 1M items
    python benchmarks/scale_eval.py --items 10000 --users 256
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from scaling import run_child, status_kib, write_results

RESULTS = Path(__file__).parent / "results" / "scale"


def measure(items: int, users: int, chunk: int, batch_size: int, hidden: int, threads: int) -> dict:
    """One evaluation in this process: seconds and peak RSS growth."""
    import numpy as np
    import torch

    from compress.data.sequences import SequenceData
    from compress.evaluation.metrics import EvalConfig, evaluation_users, metrics_from_ranks, model_ranks
    from compress.models import RecommenderConfig, SequentialRecommender

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 51, size=users)
    data = SequenceData(
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        items=rng.integers(1, items + 1, size=int(lengths.sum())).astype(np.int64),
        num_items=items,
        item_ids=np.arange(1, items + 1),
        user_ids=np.arange(users),
    )
    torch.manual_seed(0)
    config = RecommenderConfig(hidden_size=hidden, num_layers=2, num_heads=4, intermediate_size=4 * hidden,
                               num_items=items, max_len=50, dropout=0.0)
    model = SequentialRecommender(config).eval()
    eval_config = EvalConfig(batch_size=batch_size, item_chunk=chunk)
    cpu, everyone = torch.device("cpu"), evaluation_users(data, eval_config)
    model_ranks(model, data, "test", eval_config, cpu, everyone[:batch_size])  # warm-up
    before = status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
    started = time.perf_counter()
    ranks = model_ranks(model, data, "test", eval_config, cpu, everyone)  # what evaluate_model runs
    seconds = time.perf_counter() - started
    metrics = metrics_from_ranks(ranks, [10])
    return {
        "items": items, "users": users, "item_chunk": chunk, "batch_size": batch_size, "hidden": hidden,
        "threads": threads, "seconds": round(seconds, 3), "users_per_s": round(users / seconds, 1),
        "peak_rss_growth_mib": round((status_kib("VmHWM") - before) / 1024, 1),
        "rss_before_mib": round(before / 1024, 1), "ndcg@10": metrics["ndcg@10"],
        "mean_rank": float(ranks.mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--users", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--chunks", type=int, nargs="+", default=[8192, 65536], help="eval.item_chunk values to run")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--one", type=int, nargs=2, metavar=("ITEMS", "CHUNK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], args.users, args.one[1], args.batch_size, args.hidden, args.threads)))
        return

    rows = []
    for items in args.items:
        chunks = [c for c in args.chunks if c <= items] + [items + 1]  # then the whole catalogue at once
        for chunk in chunks:
            command = [sys.executable, __file__, "--one", str(items), str(chunk), "--users", str(args.users),
                       "--batch-size", str(args.batch_size), "--hidden", str(args.hidden),
                       "--threads", str(args.threads)]
            row = run_child(command, f"items {items} chunk {chunk}")
            if row is None:
                continue
            row["mode"] = "chunked" if chunk <= items else "unchunked"
            rows.append(row)
            print(json.dumps(row), flush=True)
    write_results(args.out, "scale_eval", rows, markdown)


def markdown(rows: list[dict]) -> str:
    first = rows[0]
    lines = [
        "# Full-ranking evaluation as the catalogue grows (CPU)",
        "",
        f"{first['users']} users, batch {first['batch_size']}, history masked; random model "
        f"(hidden {first['hidden']}, 2 layers), {first['threads']} torch thread(s). Peak memory: growth of "
        "the process's peak RSS during evaluation (model and data excluded). The mean rank of the test "
        "targets (random model: about half the catalogue) shows every mode ranks alike.",
        "",
        "| items | mode | item_chunk | seconds | users/s | peak memory growth (MiB) | mean target rank |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['items']:,} | {r['mode']} | {r['item_chunk']:,} | {r['seconds']:.2f} | "
                     f"{r['users_per_s']:,.0f} | {r['peak_rss_growth_mib']:,.1f} | {r['mean_rank']:,.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

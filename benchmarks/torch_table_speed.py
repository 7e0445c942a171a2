"""Batch-1 p50 of PyTorch models at their max length (`next_item_scores`), e.g. a model with a
compressed item table against its float teacher. Run it once per checkout to compare code versions:

    PYTHONPATH=<checkout> python benchmarks/torch_table_speed.py artifacts/<run>/02-item_table/model
"""

from __future__ import annotations

import argparse

import torch

from compress.bench.timing import latency_stats, time_calls
from compress.models import load_model


def p50_ms(folder: str, iterations: int, threads: int) -> float:
    """Median wall time of one batch-1 call on a random full-length history, after 10 warm-up calls."""
    torch.set_num_threads(threads)
    model = load_model(folder).eval()
    ids = torch.randint(1, model.config.num_items + 1, (1, model.config.max_len), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        timings = time_calls(lambda _: model.next_item_scores(ids, mask), range(10 + iterations), warmup=10)
    return latency_stats(timings.wall_ms)["p50"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="model folders (config.json + model.safetensors)")
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    for folder in args.models:
        print(f"{folder}: p50 {p50_ms(folder, args.iterations, args.threads):.2f} ms")


if __name__ == "__main__":
    main()

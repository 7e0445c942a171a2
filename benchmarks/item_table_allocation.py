"""Which rows of a mixed int4/int3 table (4 bits a weight, no range clipping) should get int4: the scratch
comparison behind `allocation: error` (issue 17). Same number of int4 rows each time; no recovery.

    python benchmarks/item_table_allocation.py --data /path/to/Beauty.txt --split valid
    python benchmarks/item_table_allocation.py --data /path/to/Beauty.txt --split test --rules frequency "sqrt freq x error"

The student is recipes/item_table_beauty.yaml's train stage (run that recipe first; its folder under artifacts/).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from compress.data import load_data
from compress.evaluation.metrics import evaluate_model
from compress.methods.item_table import budget_groups, row_codes, training_counts
from compress.models import load_model
from compress.recipe import load_recipe

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "item_table_beauty.yaml")
    parser.add_argument("--model", type=Path, default=ROOT / "artifacts" / "item_table_beauty" / "01-train" / "model")
    parser.add_argument("--split", choices=["valid", "test"], default="valid")
    parser.add_argument("--rules", nargs="+", default=["frequency", "norm", "freq x error", "sqrt freq x error"])
    args = parser.parse_args()
    recipe = load_recipe(args.recipe, [f"data.path={args.data}"])
    data = load_data(recipe.data, recipe.seed)
    model = load_model(args.model).eval()
    weight = model.item_embeddings.weight.detach().clone()
    counts = training_counts(data)
    by_frequency = budget_groups(counts, weight.shape[1], 4, 3, 4.0)
    high = int((by_frequency == 0).sum())
    restored = {}
    for bits in (4, 3):
        codes, scale, offset = row_codes(weight, bits, clip=False)
        restored[bits] = codes.float() * scale.float()[:, None] + offset.float()[:, None]
    saved = ((restored[3] - weight) ** 2).sum(1) - ((restored[4] - weight) ** 2).sum(1)
    interactions = torch.from_numpy(counts).float()

    def top(score: torch.Tensor) -> np.ndarray:
        score = score.clone()
        score[0] = -float("inf")  # never padding
        groups = np.ones(len(weight), dtype=np.int64)
        groups[torch.argsort(score, descending=True)[:high].numpy()] = 0
        return groups

    rules = {"frequency": lambda: by_frequency, "norm": lambda: top(weight.norm(dim=1)),
             "freq x error": lambda: top((interactions + 1) * saved),
             "sqrt freq x error": lambda: top((interactions + 1).sqrt() * saved)}
    for name in args.rules:
        groups = rules[name]()
        table = torch.where(torch.from_numpy(groups == 0)[:, None], restored[4], restored[3])
        with torch.no_grad():
            model.item_embeddings.weight.copy_(table)
        metrics = evaluate_model(model, data, args.split, recipe.eval, torch.device("cpu"))
        print(f"{name}: {high} int4 rows, {args.split} NDCG@10 {metrics['ndcg@10']:.5f}", flush=True)


if __name__ == "__main__":
    main()

"""Write the model weights of a training checkpoint (checkpoint.pt, the last finished epoch) as a model folder.

Used for the overflow-policy measurement when the short training could not finish on the shared
machine: the epoch-2 weights of benchmarks/incremental/ml1m_small.yaml, loaded by ml1m_load.yaml.

    python benchmarks/incremental/checkpoint_model.py artifacts/ml1m-incremental/01-train \
        benchmarks/incremental/ml1m_small.yaml --num-items 3416 --out artifacts/ml1m-incremental-epoch2
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import yaml

from compress.models import RecommenderConfig, SequentialRecommender, save_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", type=Path, help="the train stage folder holding checkpoint.pt")
    parser.add_argument("recipe", type=Path, help="the recipe that trained it (model shape, max_len)")
    parser.add_argument("--num-items", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    recipe = yaml.safe_load(args.recipe.read_text())
    config = RecommenderConfig(**recipe["stages"][0]["model"], num_items=args.num_items,
                               max_len=recipe["data"]["max_len"])
    checkpoint = torch.load(args.stage / "checkpoint.pt", map_location="cpu", weights_only=False)
    model = SequentialRecommender(config)
    model.load_state_dict(checkpoint["model"])
    save_model(model.eval(), args.out / "model")
    print(f"epoch {checkpoint['loop']['epoch']} weights -> {args.out / 'model'}")


if __name__ == "__main__":
    main()

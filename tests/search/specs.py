"""A tiny search spec: a 1-epoch 2-layer teacher, then prune's MLP ratio and depth searched (no benchmark:
the objective is bytes, so a trial is a prune and two validation rankings)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import TINY_MODEL, TINY_SYNTHETIC


def tiny_spec(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    spec = {
        "name": "s",
        "output_dir": str(tmp_path / "out"),
        "recipe": {
            "name": "base",
            "seed": 0,
            "device": "cpu",
            "data": {"source": "synthetic", "synthetic": TINY_SYNTHETIC, "max_len": 20},
            "eval": {"ks": [10]},
            "bench": {"enabled": False},
            "stages": [
                {"stage": "train", "model": TINY_MODEL, "epochs": 1, "batch_size": 32, "lr": 0.01},
                {"stage": "prune", "mlp_ratio": 0.5, "recovery": None},
            ],
        },
        "space": {"stages.prune.mlp_ratio": [0.0, 0.25, 0.5, 0.75]},
        "constraints": {"max_ndcg_drop": 0.5},
        "objective": "bytes",
        "budget": {"trials": 4},
    }
    spec.update(copy.deepcopy(changes))
    return spec


def write_spec(tmp_path: Path, spec: dict[str, Any], name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path

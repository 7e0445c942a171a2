"""A run's data, reloaded for later work on the run (`compress export`, `compress bench`, benchmarks)
and checked to be the data the run was made from.

The recipe's `data.path` may be relative to the folder `compress run` ran in; the manifest also
keeps its absolute path, tried when the relative one is not found from here. The reloaded data must
have the fingerprint the manifest stored, and its item ids must be the run's `item_ids.json`:
a changed or moved file would otherwise give silently wrong parity gates and metrics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from compress.data.config import DataConfig
from compress.data.loading import load_data
from compress.data.sequences import SequenceData
from compress.errors import DataError
from compress.runs.files import read_json
from compress.runs.layout import ITEM_IDS_FILE, read_manifest

HINT = "restore the data file the run was made from, or rerun `compress run` on the recipe"


def load_run_data(run_dir: Path, manifest: dict[str, Any] | None = None) -> SequenceData:
    """The data of the run in `run_dir`, as its recipe reads it; a DataError saying what differs when it is
    not the data the run used."""
    run_dir = Path(run_dir)
    manifest = manifest if manifest is not None else read_manifest(run_dir)
    recipe, stored = manifest["recipe"], manifest["data"]
    config = DataConfig.model_validate(recipe["data"])
    if config.source == "file" and not Path(config.path).is_file() and stored.get("path"):
        config = config.model_copy(update={"path": Path(stored["path"])})  # relative to where the run ran
    data = load_data(config, recipe["seed"])
    where = f"{config.path}" if config.source == "file" else "the synthetic data"
    if data.fingerprint() != stored["fingerprint"]:
        raise DataError(
            f"{where} is not the data run {manifest['name']} was made from: "
            f"{_differences(stored.get('stats', {}), data.stats())} (fingerprint {data.fingerprint()}, "
            f"the run's {stored['fingerprint']})",
            HINT,
        )
    ids_file = run_dir / ITEM_IDS_FILE
    if ids_file.is_file():
        _check_item_ids(data.item_ids, read_json(ids_file), where, manifest["name"])
    return data


def _differences(stored: dict[str, Any], now: dict[str, Any]) -> str:
    changed = [f"{key} {stored[key]} -> {now[key]}" for key in stored if key in now and stored[key] != now[key]]
    return ", ".join(changed) if changed else "same sizes, different sequences"


def _check_item_ids(item_ids: np.ndarray, stored: list[Any], where: str, run: str) -> None:
    now = [str(i) for i in item_ids.tolist()]
    then = [str(i) for i in stored]
    if now != then:
        first = next((i for i, (a, b) in enumerate(zip(then, now)) if a != b), min(len(now), len(then)))
        raise DataError(
            f"{where} is not the data run {run} was made from: item ids differ "
            f"(item {first + 1} was {_at(then, first)}, is now {_at(now, first)})",
            HINT,
        )


def _at(ids: list[str], index: int) -> str:
    return repr(ids[index]) if index < len(ids) else "missing"

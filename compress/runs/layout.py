"""Run folders on disk: `<output_dir>/<run>/manifest.json` plus one folder per stage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from compress.runs.files import read_json
from compress.errors import RunFolderError

MANIFEST_FILE = "manifest.json"
LOG_FILE = "log.txt"  # a stage's messages and library warnings
ITEM_IDS_FILE = "item_ids.json"  # original id of each internal item id 1..N


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """The manifest of a finished (or partly finished) run; a RunFolderError if `run_dir` is not a run."""
    run_dir = Path(run_dir)
    path = run_dir / MANIFEST_FILE
    if not path.is_file():
        raise RunFolderError(
            f"{run_dir} is not a run folder: {MANIFEST_FILE} is missing",
            "pass a folder written by `compress run`, e.g. artifacts/quickstart",
        )
    try:
        manifest = read_json(path)
    except json.JSONDecodeError as exc:
        raise RunFolderError(f"{path} is not valid JSON: {exc}") from None
    if not manifest.get("stages"):
        raise RunFolderError(f"{run_dir}: the run has no finished stage yet", "run `compress run` on its recipe first")
    return manifest


def stage_folder(run_dir: Path, stage: dict[str, Any]) -> Path:
    """The folder of a manifest stage entry (its output is `<NN-stage>/<artifact>`)."""
    return Path(run_dir) / Path(stage["output"]).parts[0]

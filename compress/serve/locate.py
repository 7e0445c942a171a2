"""Find the ONNX artifact a user points `compress predict` at: a run folder, a stage folder, or the onnx/ folder.

- an ONNX artifact folder (`model.onnx` + `metadata.json`): itself;
- a stage folder (`<run>/<NN-stage>/`): its `onnx/` artifact;
- a run folder (`manifest.json`): the artifact of its last ONNX stage; with `need_step`, the last
  ONNX stage that has a step model (a quantize stage after the export re-writes model.onnx only).
Torch-free (json and pathlib only).
"""

from __future__ import annotations

import json
from pathlib import Path

from compress.errors import ArtifactError
from compress.serve.onnx_model import MODEL_FILE
from compress.serve.step_model import STEP_FILE

ONNX_FOLDER = "onnx"
MANIFEST = "manifest.json"


def resolve_artifact(path: Path, need_step: bool = False) -> Path:
    """The ONNX artifact folder for `path` (see the module doc); an ArtifactError saying what was found."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"ONNX artifact folder not found: {path}", "give a run folder, a stage folder or an onnx/ folder")
    if (path / MODEL_FILE).is_file():
        return path
    if (path / ONNX_FOLDER / MODEL_FILE).is_file():
        return path / ONNX_FOLDER
    if (path / MANIFEST).is_file():
        return _from_run(path, need_step)
    raise ArtifactError(
        f"{path} is not an ONNX artifact ({MODEL_FILE}), a stage folder ({ONNX_FOLDER}/{MODEL_FILE}) "
        f"nor a run folder ({MANIFEST})",
        "point at a run folder (artifacts/<run>), a stage folder (artifacts/<run>/04-export) or its onnx/ folder",
    )


def _from_run(run_dir: Path, need_step: bool) -> Path:
    try:
        stages = json.loads((run_dir / MANIFEST).read_text()).get("stages", [])
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise ArtifactError(f"{run_dir / MANIFEST} is not a valid manifest: {exc}") from None
    folders = [run_dir / s["output"] for s in stages if isinstance(s, dict) and s.get("kind") == "onnx" and "output" in s]
    folders = [f for f in folders if (f / MODEL_FILE).is_file()]
    if not folders:
        raise ArtifactError(f"run {run_dir} has no finished ONNX stage", "add an `export` stage to the recipe")
    if need_step:
        with_step = [f for f in folders if (f / STEP_FILE).is_file()]
        if not with_step:
            raise ArtifactError(
                f"no ONNX stage of run {run_dir} has a step model ({STEP_FILE})",
                "set `incremental: true` in the recipe's export stage and rerun it",
            )
        return with_step[-1]
    return folders[-1]

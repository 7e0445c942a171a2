"""Integrity of finished artifacts: a `files.json` lists every file with its size and sha256.

A stage folder gets its list just before `stage.json` (the mark of a finished stage). It names
every file of the folder except those that change after the stage finished (`log.txt`,
`bench.json`) or belong to an unfinished one (`checkpoint.pt`, `pending.json`, temp files).
An ONNX folder written by `compress export` carries its own list. Loading an artifact checks the
files it holds against the list: a changed, truncated or missing file is an ArtifactError naming
it, never loaded. A folder without a list (a model saved by hand) is loaded as it is.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from compress.runs.files import read_json, sha256_file, write_json
from compress.errors import ArtifactError
from compress.runs.layout import LOG_FILE

FILES_FILE = "files.json"
STAGE_MARK = "stage.json"  # = pipeline.STAGE_FILE; a stage folder's list counts only once it is there
UNLISTED = frozenset({FILES_FILE, STAGE_MARK, LOG_FILE, "bench.json", "checkpoint.pt", "pending.json"})

# Files already checked in this process, by (path, size, mtime, inode, expected sha256): each file is
# hashed once per process, however many times it is loaded (a pipeline loads a model several times).
_verified: set[tuple[str, int, int, int, str]] = set()


def is_temp(path: Path) -> bool:
    """A temp file of `atomic_write` (`.<name>.<random>.tmp`), left behind when a process was killed."""
    return path.name.startswith(".") and path.name.endswith(".tmp")


def list_files(folder: Path) -> dict[str, dict[str, Any]]:
    """{relative path: {size, sha256}} of the files under `folder` that make up the finished artifact."""
    folder = Path(folder)
    return {
        path.relative_to(folder).as_posix(): {"size": path.stat().st_size, "sha256": sha256_file(path)}
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name not in UNLISTED and not is_temp(path)
    }


def write_file_list(folder: Path) -> dict[str, dict[str, Any]]:
    """Write `folder/files.json` (atomically) and return the entries."""
    files = list_files(folder)
    write_json(Path(folder) / FILES_FILE, {"files": files})
    return files


def verify_folder(folder: Path, hint: str | None = None) -> bool:
    """Check every file listed in `folder/files.json`; False when there is no list to check against."""
    folder = Path(folder)
    listed = _read_list(folder)
    if listed is None:
        return False
    _check(folder, listed, "", hint or _hint(folder))
    return True


def verify_artifact(path: Path) -> bool:
    """Check an artifact folder (`model/`, `onnx/`) against its own list or its finished stage's list.

    False when neither exists (nothing to check against); an ArtifactError on any mismatch.
    """
    path = Path(path)
    own = _read_list(path)
    if own is not None:
        _check(path, own, "", _hint(path))
        return True
    stage = path.parent
    if not (stage / STAGE_MARK).is_file():
        return False
    listed = _read_list(stage)
    if listed is None:
        return False
    _check(stage, listed, f"{path.name}/", _hint(stage))
    return True


def clear_unfinished(folder: Path, keep: set[str]) -> None:
    """Empty an unfinished stage folder but for the top-level names in `keep` (e.g. its checkpoint):
    a killed process may have left partial artifacts, temp files and scratch folders, and none is listed yet."""
    for path in Path(folder).iterdir():
        if path.name in keep:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _read_list(folder: Path) -> dict[str, dict[str, Any]] | None:
    path = folder / FILES_FILE
    if not path.is_file():
        return None
    try:
        files = read_json(path)["files"]
        return {name: {"size": int(entry["size"]), "sha256": str(entry["sha256"])} for name, entry in files.items()}
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ArtifactError(f"{path} is damaged ({type(exc).__name__}: {exc})", _hint(folder)) from None


def _check(folder: Path, listed: dict[str, dict[str, Any]], prefix: str, hint: str) -> None:
    for name, entry in listed.items():
        if not name.startswith(prefix):
            continue
        path = folder / name
        if not path.is_file():
            raise ArtifactError(f"{path} is missing (listed in {folder / FILES_FILE})", hint)
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino, entry["sha256"])
        if key in _verified:
            continue
        if stat.st_size != entry["size"]:
            raise ArtifactError(
                f"{path} has {stat.st_size:,} bytes, {entry['size']:,} when it was written: "
                "the file is truncated or was changed", hint)
        if sha256_file(path) != entry["sha256"]:
            raise ArtifactError(f"{path} was changed after it was written (its sha256 differs from "
                                f"{folder / FILES_FILE})", hint)
        _verified.add(key)


def _hint(folder: Path) -> str:
    if (folder / STAGE_MARK).is_file():
        return (f"rerun the stage: `compress run <recipe> --force` (or delete {folder} and rerun "
                "without --force to redo only this stage)")
    return f"write {folder} again (e.g. `compress export ... --out {folder}`)"

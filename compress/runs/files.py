"""Model artifact I/O: safetensors weights + JSON config, written atomically."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from compress.runs.faults import kill_point

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"  # a sharded Hugging Face checkpoint (save_pretrained max_shard_size)


def weight_files(folder: Path) -> list[Path]:
    """The weight files of a model folder: `model.safetensors`, or a sharded checkpoint's index and the shards its
    `weight_map` names; empty when there is neither. A shard the index names but the folder lacks is listed too
    (the caller says it is missing); an unreadable index is a ValueError."""
    folder = Path(folder)
    if (folder / WEIGHTS_FILE).is_file() or not (folder / WEIGHTS_INDEX_FILE).is_file():
        return [folder / WEIGHTS_FILE] if (folder / WEIGHTS_FILE).is_file() else []
    try:
        shards = sorted(set(json.loads((folder / WEIGHTS_INDEX_FILE).read_text())["weight_map"].values()))
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{folder / WEIGHTS_INDEX_FILE} is not a safetensors index (a weight_map of shard files): {exc!r}") from None
    return [folder / WEIGHTS_INDEX_FILE, *(folder / shard for shard in shards)]


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temp file beside `path`, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        kill_point(f"write:{path.name}")
        os.replace(tmp, path)
        _fsync_dir(path.parent)  # the rename itself survives a reboot
        kill_point(f"wrote:{path.name}")
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: Path, data: Any) -> None:
    """Write `data` as indented JSON, atomically."""
    text = json.dumps(data, indent=2, sort_keys=False, default=str) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def folder_sha256(folder: Path) -> str:
    """A short hash of every file in `folder` (relative path + sha256; hidden files skipped), e.g. a checkpoint."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if path.is_file() and not any(part.startswith(".") for part in relative.parts):
            digest.update(f"{relative.as_posix()}\0{sha256_file(path)}\0".encode())
    return digest.hexdigest()[:16]


def stable_hash(data: Any) -> str:
    """A short content hash of JSON-serialisable `data` (key order does not matter)."""
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def link_or_copy(source: str | Path, target: str | Path) -> None:
    """Hard-link a finished file (artifact files are replaced atomically, never edited in place);
    copy where linking fails (another device)."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def dir_size_bytes(path: Path) -> int:
    """Bytes on disk of every file in an artifact folder (temp files excluded)."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file() and not f.name.endswith(".tmp"))


def human_bytes(size: float) -> str:
    """1536 -> '1.5 KiB'."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"

"""Serving from an exported ONNX artifact with onnxruntime alone: histories in, top-K out.

Torch-free by design (only numpy, onnxruntime and compress.serve.onnx_model are imported), so a
serving image needs no PyTorch. Histories are original item ids, oldest first. Unknown ids
are dropped with a warning; a history left empty is an error (no popularity fallback: an
empty history has no sequence to model, and the caller should choose its own default).

Input file formats (one history per line, detected per line):
    101 102 103                       plain: ids separated by spaces or commas
    ["101", "102", "103"]             JSON list
    {"user": "u1", "history": [...]}  JSON object; `user` is echoed back
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from compress.errors import CompressError
from compress.serve.onnx_model import OnnxRecommender
from compress.data.padding import left_pad

BATCH_SIZE = 256


class InputError(CompressError):
    """A history to predict from is empty, unreadable or has no known item."""


@dataclass
class Request:
    history: list[str]
    user: Any = None
    line: int | None = None  # line number in the input file


@dataclass
class Recommendation:
    request: Request
    items: list[Any]
    scores: list[float]
    dropped: list[str] = field(default_factory=list)  # unknown ids left out of the history


def parse_history(text: str) -> list[str]:
    """Ids of a plain history line ("1 2 3" or "1,2,3")."""
    return text.replace(",", " ").split()


def read_requests(path: Path) -> list[Request]:
    """Histories from a file: plain lines, JSON lists or JSON objects with `history` (see module doc)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"input file not found: {path}")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(f"{path}:{line}: not UTF-8 text ({exc.reason} at byte {exc.start})",
                         "save the file as UTF-8 (item ids are text)") from None
    requests = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            requests.append(_parse_line(line.strip(), number, path))
    if not requests:
        raise InputError(f"{path} holds no history", "one history per line: item ids separated by spaces")
    return requests


def recommend(model: OnnxRecommender, requests: list[Request], top_k: int | None = None) -> list[Recommendation]:
    """Top-K original item ids and scores for every request (input items are never recommended)."""
    k = model.top_k if top_k is None else top_k
    if not 1 <= k <= model.top_k:
        raise InputError(f"top-k {k} is out of range: the artifact was exported with K = {model.top_k}",
                         "re-export with a larger top_k")
    lookup = {str(original): internal for internal, original in enumerate(model.metadata["item_ids"], start=1)}
    encoded, dropped = [], []
    for request in requests:
        ids = [lookup.get(str(item)) for item in request.history]
        dropped.append([item for item, i in zip(request.history, ids) if i is None])
        known = np.array([i for i in ids if i is not None], dtype=np.int64)
        if not len(known):
            where = f"line {request.line}" if request.line else "the history"
            raise InputError(f"{where}: no known item in {request.history[:10]!r}",
                             "give original item ids of the training data (empty histories are not served)")
        encoded.append(known)
    results = []
    for start in range(0, len(encoded), BATCH_SIZE):
        ids = left_pad(encoded[start : start + BATCH_SIZE], model.max_len)
        scores, internal = model.topk(ids, (ids > 0).astype(np.int64))
        for row, (row_scores, row_ids) in enumerate(zip(scores[:, :k], internal[:, :k])):
            index = start + row
            results.append(Recommendation(
                requests[index], model.original_ids(row_ids), [float(s) for s in row_scores], dropped[index]
            ))
    return results


def _parse_line(line: str, number: int, path: Path) -> Request:
    if not line.startswith(("[", "{")):
        return Request(parse_history(line), line=number)
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{number}: not valid JSON: {exc}") from None
    if isinstance(value, dict):
        if not isinstance(value.get("history"), list):
            raise InputError(f"{path}:{number}: a JSON object needs a `history` list", '{"user": "u1", "history": [1, 2]}')
        return Request([str(i) for i in value["history"]], user=value.get("user"), line=number)
    if isinstance(value, list):
        return Request([str(i) for i in value], line=number)
    raise InputError(f"{path}:{number}: expected a JSON list or object, got {type(value).__name__}")

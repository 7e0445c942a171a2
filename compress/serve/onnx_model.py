"""Read and run an exported ONNX recommender with onnxruntime (or OpenVINO, compress/serve/openvino_model.py)
alone (no torch import here).

An ONNX artifact folder holds `model.onnx` and `metadata.json`. The graph takes left-padded
`item_ids` [batch, seq] (int64, internal ids, 0 is padding) and `attention_mask` [batch, seq]
(int64) and returns `top_scores` [batch, K], `top_ids` [batch, K] (internal ids, best first,
items of the input left out) and `scores` [batch, num_items + 1] (the padding column at -inf). The metadata maps
internal id i to the original id `item_ids[i - 1]`.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, get_args

import numpy as np

from compress.errors import ArtifactError, CompressError
from compress.export.config import Engine
from compress.runs.integrity import verify_artifact

MODEL_FILE = "model.onnx"
METADATA_FILE = "metadata.json"
FORMAT = "compress-onnx-recommender"
INPUTS = ("item_ids", "attention_mask")
OUTPUTS = ("top_scores", "top_ids", "scores")
FULL_SCORES = "full_scores"  # extra input of chunked-ranking graphs: compute `scores` (else it is [B, 0])
CPU_PROVIDER, CUDA_PROVIDER = "CPUExecutionProvider", "CUDAExecutionProvider"


def import_onnxruntime() -> Any:
    """onnxruntime, or a CompressError saying how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise CompressError(
            "onnxruntime is not installed", "pip install 'compress[cpu]' (or 'compress[gpu]' for CUDA)"
        ) from None
    return onnxruntime


def onnx_device(device: str = "auto") -> str:
    """Where onnxruntime runs for a requested device (auto, cpu, cuda, cuda:N): "cuda" when asked
    for (or auto) and onnxruntime sees a GPU (onnxruntime-gpu), else "cpu"."""
    if device.split(":")[0] == "cpu":
        return "cpu"
    return "cuda" if CUDA_PROVIDER in import_onnxruntime().get_available_providers() else "cpu"


def providers_for(device: str = "auto") -> list[str]:
    """The onnxruntime execution providers for `device`: the one place they are chosen."""
    return [CUDA_PROVIDER, CPU_PROVIDER] if onnx_device(device) == "cuda" else [CPU_PROVIDER]


def read_metadata(folder: Path) -> dict[str, Any]:
    """The artifact's metadata; a missing file or a foreign folder is an ArtifactError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ArtifactError(f"ONNX artifact folder not found: {folder}")
    for name in (MODEL_FILE, METADATA_FILE):
        if not (folder / name).is_file():
            raise ArtifactError(
                f"{folder} is not an ONNX artifact: {name} is missing", "create one with `compress export`"
            )
    verify_artifact(folder)
    try:
        metadata = json.loads((folder / METADATA_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{folder / METADATA_FILE} is not valid JSON: {exc}") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise ArtifactError(f"{folder / METADATA_FILE} does not describe a {FORMAT}")
    missing = [key for key in ("item_ids", "num_items", "max_len", "top_k") if key not in metadata]
    if missing:
        raise ArtifactError(f"{folder / METADATA_FILE} lacks {', '.join(missing)}")
    if len(metadata["item_ids"]) != metadata["num_items"]:
        raise ArtifactError(f"{folder / METADATA_FILE}: item_ids has {len(metadata['item_ids'])} entries, "
                            f"num_items says {metadata['num_items']}")
    return metadata


ENGINES: tuple[Engine, ...] = get_args(Engine)  # what can run an exported artifact; onnxruntime is the default


class ExportedRecommender(ABC):
    """An exported artifact as any engine serves it: its metadata, full scores or the in-graph top-K.

    A subclass loads the graph into its engine and runs it (`_run`); `engine` names it in bench rows."""

    engine: str

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.metadata = read_metadata(self.folder)
        self.max_len: int = int(self.metadata["max_len"])
        self.num_items: int = int(self.metadata["num_items"])
        self.top_k: int = int(self.metadata["top_k"])
        self.chunked = FULL_SCORES in self.metadata.get("inputs", INPUTS)

    def scores(self, item_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """[B, num_items + 1] scores of every item, as the PyTorch model's; the padding column is -inf."""
        return self._run(["scores"], item_ids, attention_mask, full_scores=True)[0]

    def topk(self, item_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(scores [B, K], internal item ids [B, K]), best first, input items left out; K was fixed at export."""
        top_scores, top_ids = self._run(["top_scores", "top_ids"], item_ids, attention_mask)
        return top_scores, top_ids

    def num_parameters(self) -> int:
        """Sum of the graph's initializer sizes (the export stores the tied item table once)."""
        import onnx

        graph = onnx.load(str(self.folder / MODEL_FILE), load_external_data=False).graph
        return int(sum(int(np.prod(t.dims)) for t in graph.initializer))

    def original_ids(self, internal: np.ndarray) -> list:
        """Original item ids of internal ids (1..num_items)."""
        table = self.metadata["item_ids"]
        return [table[int(i) - 1] for i in np.asarray(internal).ravel()]

    def feeds(self, item_ids: np.ndarray, attention_mask: np.ndarray, full_scores: bool) -> dict[str, np.ndarray]:
        """The graph's inputs: int64 ids and mask (and, for a chunked-ranking graph, whether to score every item)."""
        feeds = {
            "item_ids": np.ascontiguousarray(item_ids, dtype=np.int64),
            "attention_mask": np.ascontiguousarray(attention_mask, dtype=np.int64),
        }
        if self.chunked:  # chunked graphs score every item only when asked
            feeds[FULL_SCORES] = np.array(full_scores)
        return feeds

    @abstractmethod
    def _run(
        self, outputs: list[str], item_ids: np.ndarray, attention_mask: np.ndarray, full_scores: bool = False
    ) -> list[np.ndarray]:
        """The named outputs of one call of the graph."""


def load_recommender(
    folder: Path, engine: Engine = "onnxruntime", device: str = "auto", threads: int | None = None
) -> ExportedRecommender:
    """The artifact in `folder` served by `engine` (one of ENGINES; OpenVINO runs on the CPU)."""
    if engine == "onnxruntime":
        return OnnxRecommender(folder, device, threads)
    if engine == "openvino":
        from compress.serve.openvino_model import OpenVinoRecommender

        return OpenVinoRecommender(folder, threads)
    raise CompressError(f"unknown engine {engine!r}", f"choose one of {', '.join(ENGINES)}")


class OnnxRecommender(ExportedRecommender):
    """An exported recommender served by onnxruntime: full scores or the in-graph top-K.

    `device`: auto (CUDA when onnxruntime sees a GPU), cpu or cuda; `threads`: intra-op threads.
    """

    def __init__(self, folder: Path, device: str = "auto", threads: int | None = None) -> None:
        super().__init__(folder)
        ort = import_onnxruntime()
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(
                str(self.folder / MODEL_FILE), options, providers=providers_for(device)
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors on corrupt graphs
            raise ArtifactError(f"onnxruntime cannot load {self.folder / MODEL_FILE}: {exc}") from None
        names = {i.name for i in self.session.get_inputs()}, {o.name for o in self.session.get_outputs()}
        self.chunked = FULL_SCORES in names[0]
        if names != (set(INPUTS) | ({FULL_SCORES} if self.chunked else set()), set(OUTPUTS)):
            raise ArtifactError(f"{self.folder / MODEL_FILE} has inputs/outputs {names}, expected {INPUTS} / {OUTPUTS}")
        self.engine = f"onnxruntime-{self.session.get_providers()[0].removesuffix('ExecutionProvider').lower()}"

    def _run(
        self, outputs: list[str], item_ids: np.ndarray, attention_mask: np.ndarray, full_scores: bool = False
    ) -> list[np.ndarray]:
        return self.session.run(outputs, self.feeds(item_ids, attention_mask, full_scores))

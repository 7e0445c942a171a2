"""ONNX export of a SequentialRecommender: ranking inside the graph, checked, optimised, with metadata.

The exported graph takes left-padded `item_ids` and `attention_mask` [batch, seq] (both
dynamic) and returns `top_scores`, `top_ids` [batch, K] of the items not in the input, and
the model's full `scores` matrix (as `SequentialRecommender.score`: only padding is -inf). `export_onnx` writes the
artifact; `export_and_check` adds the ranking parity gate against the PyTorch model.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any, Callable

import onnx
import torch
from torch import nn

from compress.runs.files import CONFIG_FILE, atomic_write, read_json, write_json
from compress.data.sequences import SequenceData
from compress.runtime.environment import versions
from compress.errors import ArtifactError, RecipeError
from compress.evaluation.config import EvalConfig, ParityConfig
from compress.evaluation.metrics import evaluate_onnx
from compress.handlers import TorchArtifact
from compress.runs.integrity import FILES_FILE, write_file_list
from compress.runs.layout import ITEM_IDS_FILE, MANIFEST_FILE
from compress.runs.run_data import load_run_data
from compress.models import SequentialRecommender, load_model
from compress.export.config import ExportSettings
from compress.export.chunked_topk import add_chunked_ranking
from compress.export.graph import share_transposed_initializers
from compress.export.item_table import PackedTable, store_packed_table
from compress.export.step import check_step_parity, export_step, step_parity
from compress.serve.step_model import STEP_FILE
from compress.models.item_tables import FactorizedTable, QuantizedTable
from compress.serve.onnx_model import FORMAT, FULL_SCORES, INPUTS, METADATA_FILE, MODEL_FILE, OUTPUTS, OnnxRecommender, import_onnxruntime, providers_for
from compress.evaluation.parity import check_parity, onnx_parity
from compress.evaluation.scoring import torch_scores

DEFAULT_OPSET = {"legacy": 17, "dynamo": 23}  # opset 23: ONNX Attention and RMSNormalization ops
_OPTIMIZATION = {"none": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED"}


class RankingGraph(nn.Module):
    """What the ONNX graph computes: the model's scores, and the top-K of the items not in the input."""

    def __init__(self, model: SequentialRecommender, top_k: int) -> None:
        super().__init__()
        self.model = model
        self.top_k = top_k

    def forward(self, item_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        scores = self.model.next_item_scores(item_ids, attention_mask)
        unseen = scores.scatter(1, item_ids, float("-inf"))  # input items (and padding 0) are not recommended
        top_scores, top_ids = unseen.topk(self.top_k, dim=-1)
        return top_scores, top_ids, scores


class QueryGraph(nn.Module):
    """The encoder alone, for chunked ranking: `query` [B, w] such that scores = query @ rowsᵀ,
    rows = the lookup table (the item table, or the left factor of a low-rank table)."""

    def __init__(self, model: SequentialRecommender) -> None:
        super().__init__()
        self.model = model

    def forward(self, item_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.model.last_states(item_ids, attention_mask)
        table = self.model.item_embeddings
        return states @ table.right.t() if isinstance(table, FactorizedTable) else states


def serving_window(model: SequentialRecommender, max_len: int | None) -> SequentialRecommender:
    """`model` scoring the last `max_len` events (the same weights; positions count from the first item in
    the window, RoPE being relative); `model` itself when no window is asked for or it is the model's own."""
    if max_len is None or max_len == model.config.max_len:
        return model
    if max_len > model.config.max_len:
        raise RecipeError(
            f"export max_len {max_len} is longer than the {model.config.max_len} events the model was trained on",
            f"use a window of at most {model.config.max_len}, or leave max_len unset",
        )
    windowed = copy.copy(model)  # shares the modules and weights; only the config differs
    windowed.config = model.config.model_copy(update={"max_len": max_len})
    return windowed


def export_onnx(
    model: SequentialRecommender,
    folder: Path,
    settings: ExportSettings,
    item_ids: list[Any],
    provenance: dict[str, Any],
) -> dict[str, Any]:
    """Write `model.onnx` (checked, optimised) and `metadata.json` into `folder`; return the metadata."""
    model = serving_window(model, settings.max_len)
    if settings.top_k > model.config.num_items:
        raise ArtifactError(f"top_k {settings.top_k} exceeds the catalogue size {model.config.num_items}")
    if len(item_ids) != model.config.num_items:
        raise ArtifactError(f"the id map has {len(item_ids)} items, the model {model.config.num_items}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    opset = settings.opset or DEFAULT_OPSET[settings.exporter]
    raw = folder / "raw.onnx"
    started = time.perf_counter()
    quantized_table = isinstance(model.item_embeddings, QuantizedTable)
    traced = _with_float_table(model.cpu()) if quantized_table else model.cpu()
    if settings.item_chunk is None:
        _torch_export(RankingGraph(traced, settings.top_k).eval(), raw, settings.exporter, opset, model.config.max_len)
    else:
        if not model.config.tie_weights:
            raise ArtifactError("item_chunk ranks against the lookup table: it needs a tied item table (tie_weights)")
        _torch_export(QueryGraph(traced).eval(), raw, settings.exporter, opset, model.config.max_len, ("query",))
        _append_chunked_ranking(raw, model.config.num_items, settings.top_k, settings.item_chunk)
    export_seconds = time.perf_counter() - started
    try:
        onnx.checker.check_model(str(raw), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ArtifactError(f"the exported graph fails onnx.checker: {exc}") from None
    optimize_onnx(raw, folder / MODEL_FILE, settings.optimization)
    raw.unlink()
    share_transposed_initializers(folder / MODEL_FILE)  # the tied item table is stored once
    if quantized_table:  # stored packed, dequantized inside the graph
        store_packed_table(folder / MODEL_FILE, PackedTable.from_module(model.item_embeddings))
    metadata = {
        "format": FORMAT,
        "num_items": model.config.num_items,
        "max_len": model.config.max_len,
        "top_k": settings.top_k,
        "inputs": list(INPUTS) + ([FULL_SCORES] if settings.item_chunk is not None else []),
        "outputs": list(OUTPUTS),
        "opset": opset,
        "exporter": settings.exporter,
        "optimization": settings.optimization,
        "item_chunk": settings.item_chunk,
        "export_seconds": round(export_seconds, 2),
        "quantization": None,
        "item_table": model.config.table.model_dump() if model.config.table is not None else None,
        "model": model.config.model_dump(),  # the architecture (the bench counts its FLOPs)
        "source": provenance,
        "versions": versions(),
        "item_ids": item_ids,
    }
    if settings.incremental:
        step_opset = settings.opset if settings.exporter == "legacy" and settings.opset else DEFAULT_OPSET["legacy"]
        metadata["step"] = export_step(traced, folder, settings.top_k, step_opset,
                                       lambda raw, target: optimize_onnx(raw, target, settings.optimization))
        if quantized_table:  # the step graph reads the same packed table
            share_transposed_initializers(folder / STEP_FILE)
            store_packed_table(folder / STEP_FILE, PackedTable.from_module(model.item_embeddings))
    write_json(folder / METADATA_FILE, metadata)
    return metadata


def optimize_onnx(source: Path, target: Path, level: str) -> None:
    """Apply onnxruntime's graph optimisations at `level` and save the result to `target`."""
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _OPTIMIZATION[level])

    def write(tmp: Path) -> None:
        options.optimized_model_filepath = str(tmp)
        ort.InferenceSession(str(source), options, providers=providers_for("cpu"))

    atomic_write(target, write)


def export_and_check(
    model: SequentialRecommender,
    folder: Path,
    settings: ExportSettings,
    parity: ParityConfig,
    data: SequenceData,
    item_ids: list[Any],
    provenance: dict[str, Any],
    log: Callable[[str], None] = print,
) -> dict[str, float]:
    """Export, then compare the ONNX ranking with the PyTorch one on test users; return the parity report.
    With a serving window the PyTorch side scores the same window: parity checks the export, and the
    window's accuracy cost shows in the stage's metrics."""
    model = serving_window(model, settings.max_len)
    metadata = export_onnx(model, folder, settings, item_ids, provenance)
    log(f"exported {folder / MODEL_FILE} (opset {metadata['opset']}, {metadata['exporter']} exporter, "
        f"{metadata['export_seconds']:.1f}s; scores the last {metadata['max_len']} events)")
    report = onnx_parity(torch_scores(model), folder, data, model.config.max_len, parity)
    log(f"parity vs PyTorch: top-{parity.k} overlap {report[f'overlap@{parity.k}']:.4f}, "
        f"NDCG@{parity.k} drop {report[f'ndcg_drop@{parity.k}']:+.5f}")
    if settings.incremental:
        report["step"] = step_parity(model, folder, data, min(parity.users, 128), parity.k)
        log(f"step parity vs the PyTorch full pass: {report['step']['events']} events, max |diff| "
            f"{report['step']['max_abs_diff']:.1e}, identical top-{report['step']['k']} {report['step']['identical_topk']:.4f}")
    check_parity(report, parity, folder, "the ONNX export")
    if settings.incremental:
        check_step_parity(report["step"])
    return report


def _with_float_table(model: SequentialRecommender) -> SequentialRecommender:
    """A copy of `model` whose quantized item table is a plain float table of the dequantized values."""
    plain = SequentialRecommender(model.config.model_copy(update={"table": None}))
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("item_embeddings.")}
    plain.load_state_dict({**state, "item_embeddings.weight": model.item_embeddings.weight.detach()}, strict=True)
    return plain.eval()


def _append_chunked_ranking(path: Path, num_items: int, top_k: int, chunk: int) -> None:
    """Add the chunked top-K (compress/export/chunked_topk.py) after the exported `query`."""
    graph_model = onnx.load(str(path))
    lookups = [n for n in graph_model.graph.node if n.op_type == "Gather" and n.input[1] == "item_ids"]
    if len(lookups) != 1:
        raise ArtifactError(f"cannot find the item lookup in the exported graph ({len(lookups)} Gather nodes on item_ids)")
    add_chunked_ranking(graph_model, "query", lookups[0].input[0], num_items, top_k, chunk)
    atomic_write(path, lambda tmp: onnx.save(graph_model, str(tmp)))


def _torch_export(
    graph: nn.Module, path: Path, exporter: str, opset: int, max_len: int, outputs: tuple[str, ...] = OUTPUTS
) -> None:
    example = torch.tensor([[0, 0, 1, 2, 3], [1, 2, 3, 4, 5]], dtype=torch.int64)
    example = example.clamp(max=graph.model.config.num_items)
    args = (example, (example > 0).long())
    if exporter == "legacy":
        axes = {"item_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}}
        axes |= {name: {0: "batch"} for name in outputs}
        torch.onnx.export(
            graph, args, str(path), dynamo=False, opset_version=opset,
            input_names=list(INPUTS), output_names=list(outputs), dynamic_axes=axes,
        )
    else:
        # the trace example is 5 long: a shorter window still has to admit it (ONNX keeps no maximum)
        batch, seq = torch.export.Dim("batch", min=1), torch.export.Dim("seq", min=2, max=max(max_len, example.shape[1]))
        program = torch.onnx.export(
            graph, args, dynamo=True, opset_version=opset, external_data=False, verbose=False,  # no progress prints
            input_names=list(INPUTS), output_names=list(outputs),
            dynamic_shapes={"item_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}},
        )
        program.save(str(path), external_data=False)
    if not path.is_file():
        raise ArtifactError(f"torch.onnx.export wrote no file at {path}")


def export_path(
    path: Path,
    out: Path,
    settings: ExportSettings,
    parity: ParityConfig,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """`compress export`: export a run's last PyTorch model (or a model folder) into `out`.

    Inside a run folder the id map, the parity gate and the test metrics (`metrics.json`)
    come from the run's data; a bare model folder is exported with identity ids (1..N) and
    no parity gate, and says so.
    """
    model_dir, run_dir = _resolve_model(Path(path))
    model = load_model(model_dir, "cpu")
    provenance = {"run": run_dir.name if run_dir else None, "stage": model_dir.parent.name, "model": str(model_dir)}
    out = Path(out)
    (out / FILES_FILE).unlink(missing_ok=True)  # a previous export's list would not match the new files
    if run_dir is None:
        log(f"{model_dir} is not inside a run folder: item ids are exported as 1..N and the parity gate is skipped")
        ids = list(range(1, model.config.num_items + 1))
        export_onnx(model, out, settings, ids, provenance)
        write_file_list(out)
        return {"artifact": str(out)}
    manifest = read_json(run_dir / MANIFEST_FILE)
    recipe = manifest["recipe"]
    data = load_run_data(run_dir, manifest)  # checked: the data and item ids the run was made from
    ids = read_json(run_dir / ITEM_IDS_FILE)
    report = export_and_check(model, out, settings, parity, data, ids, provenance, log)
    exported = OnnxRecommender(out, "cpu")
    metrics = evaluate_onnx(exported, data, "test", EvalConfig(**recipe["eval"]))
    write_json(out / "metrics.json", {"test": metrics})
    write_file_list(out)
    return {"artifact": str(out), "parity": report, "metrics": metrics}


def _resolve_model(path: Path) -> tuple[Path, Path | None]:
    """(model folder, its run folder or None) for a run folder or a model folder."""
    if (path / MANIFEST_FILE).is_file():
        stages = [s for s in read_json(path / MANIFEST_FILE).get("stages", []) if s.get("kind") == TorchArtifact.kind]
        if not stages:
            raise ArtifactError(f"run {path} has no finished PyTorch stage to export")
        return path / stages[-1]["output"], path
    if not (path / CONFIG_FILE).is_file():
        raise ArtifactError(
            f"{path} is neither a run folder (manifest.json) nor a model folder (config.json)",
            "e.g. compress export artifacts/quickstart --out exported/",
        )
    run_dir = path.parent.parent  # <run>/<NN-stage>/model
    return path, run_dir if (run_dir / MANIFEST_FILE).is_file() else None

"""Item-table stage: compress the tied item table (lookup and scoring), then recover.

Methods (compress/methods/item_table.py): `rowwise` integers (8, 4 or 2 bits, per-row fp16
scale and offset), `mixed` (frequent items `high_bits`, the rest `low_bits`, the split from
training interactions, or as many as fit a bits-per-weight budget), `lowrank` (truncated SVD,
rank r). Recovery: a short fit distilled from the uncompressed model, kept only if it beats the
compressed model on validation NDCG@10. For an integer table it is quantization-aware by default:
the float table trains through the quantizer (straight-through gradient) and is quantized again
at the end, so the model validated is the model stored; with `quantization_aware: false` the codes
stay fixed and only the rest of the model adapts. Low-rank factors train as they are. The output is a PyTorch model whose config.json records the table (`table`);
the export stage stores it compressed in the ONNX graph. Only export may follow (the chain
check is in registry.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from compress.errors import RecipeError
from compress.evaluation.metrics import evaluate_model
from compress.methods.item_table import (
    FakeQuantTable, budget_groups, compressed_spec, error_allocation, factorized_table, frequency_groups, quantized_table,
    table_bytes, training_counts,
)
from compress.models import SequentialRecommender, load_model
from compress.models.item_tables import QuantizedTable
from compress.handlers import Artifact
from compress.stages.base import StageContext, StageResult, recover, save_result
from compress.stages.config import ItemTableConfig
from compress.training.losses import BlockMap


def run(ctx: StageContext, config: ItemTableConfig, source: Artifact) -> StageResult:
    original = load_model(source.path, ctx.device).eval().requires_grad_(False)
    if original.config.table is not None or not original.config.tie_weights:
        raise RecipeError(f"item_table: the model in {source.path} has no plain tied item table to compress "
                          "(already compressed, or tie_weights is false)")
    model = compress_model(original, config, ctx)
    before = evaluate_model(model, ctx.data, "test", ctx.eval_config, ctx.device)
    fp32_bytes = original.item_embeddings.weight.numel() * 4
    stored = table_bytes(model.item_embeddings)
    ctx.log(f"{describe(config)}: table {fp32_bytes:,} -> {stored:,} bytes ({fp32_bytes / stored:.2f}x smaller); "
            f"before recovery test ndcg@10 {before['ndcg@10']:.4f}")
    info: dict[str, Any] = {
        "method": describe(config), "table": model.config.table.model_dump(), "table_bytes": stored,
        "table_bytes_fp32": fp32_bytes, "table_bytes_ratio": stored / fp32_bytes, "metrics_before_recovery": before,
    }
    if config.recovery is None:
        return save_result(ctx, model, info)
    aware = config.quantization_aware and isinstance(model.item_embeddings, QuantizedTable)
    if aware:  # train the float table through the quantizer, store what it quantizes to
        table = model.item_embeddings
        model.item_embeddings = FakeQuantTable(original.item_embeddings.weight, table.group_bits, table.group_of_row(),
                                               config.clip)
    info |= recover(ctx, model, original, config.recovery, _block_map(model, config.recovery.blocks))
    if aware:
        model.item_embeddings = model.item_embeddings.freeze()
    return save_result(ctx, model, {**info, "quantization_aware_recovery": aware})


def compress_model(original: SequentialRecommender, config: ItemTableConfig, ctx: StageContext) -> SequentialRecommender:
    """A copy of `original` whose item table is compressed as `config` says (the rest trainable)."""
    weight = original.item_embeddings.weight.detach().cpu()
    try:
        if config.method == "lowrank":
            table = factorized_table(weight, config.rank)
        elif config.method == "rowwise":
            table = quantized_table(weight, [config.bits], np.zeros(len(weight), dtype=np.int64), config.clip)
        else:
            groups = mixed_groups(config, ctx.data, weight)
            table = quantized_table(weight, [config.high_bits, config.low_bits], groups, config.clip)
    except ValueError as exc:
        raise RecipeError(f"item_table: {exc}") from None
    shape = original.config.model_copy(update={"table": compressed_spec(table)})
    model = SequentialRecommender(shape)
    state = {k: v for k, v in original.state_dict().items() if not k.startswith("item_embeddings.")}
    state |= {f"item_embeddings.{k}": v for k, v in table.state_dict().items()}
    model.load_state_dict(state, strict=True)
    return model.to(ctx.device).requires_grad_(True)


def mixed_groups(config: ItemTableConfig, data, weight: torch.Tensor) -> np.ndarray:
    """Row groups of a mixed table: how many rows get high_bits from the interaction coverage or the
    bits-per-weight budget; which ones by frequency, or by the error they save (`allocation`)."""
    counts = training_counts(data)
    if config.bits_per_weight is not None:
        groups = budget_groups(counts, weight.shape[1], config.high_bits, config.low_bits, config.bits_per_weight)
    else:
        groups = frequency_groups(counts, config.coverage)
    if config.allocation == "error":
        groups = error_allocation(weight, counts, groups, config.high_bits, config.low_bits, config.clip)
    return groups


def describe(config: ItemTableConfig) -> str:
    """e.g. `rowwise int4`, `mixed int8/int4 (coverage 0.8)`, `mixed int4/int3 (4.0 bits per weight)`, `lowrank r=16`."""
    if config.method == "rowwise":
        return f"rowwise int{config.bits}"
    if config.method == "mixed":
        split = f"{config.bits_per_weight} bits per weight" if config.bits_per_weight else f"coverage {config.coverage}"
        by = ", by error" if config.allocation == "error" else ""
        return f"mixed int{config.high_bits}/int{config.low_bits} ({split}{by})"
    return f"lowrank r={config.rank}"


def _block_map(model: SequentialRecommender, blocks: int) -> BlockMap:
    try:
        return BlockMap.build(model.config.num_layers, model.config.num_layers, blocks)
    except ValueError as exc:
        raise RecipeError(f"item_table: recovery.{exc}", "lower recovery.blocks") from None

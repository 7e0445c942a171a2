"""Item-table compression: row-wise integers, frequency-aware mixed precision, low rank.

- Row-wise (FBGEMM/TorchRec style, asymmetric): per row, offset = min, scale = (max - min) /
  (2^bits - 1), both rounded to fp16 first; code = round((w - offset) / scale) clipped to
  0..2^bits-1, so |w - (code * scale + offset)| <= scale / 2 + (fp16 rounding of the range).
- Mixed: the most frequent items (by training interactions) that together make `coverage`
  of the training interactions get `high_bits`, the others `low_bits`; padding goes low.
- Low rank: the truncated SVD, table ≈ (U √S)(√S Vᵀ), rank r; a recovery fine-tune follows
  in the stage.
"""

from __future__ import annotations

import numpy as np
import torch

from compress.data.batching import history_and_target
from compress.data.sequences import SequenceData
from compress.models.item_tables import FactorizedTable, QuantizedTable, TableSpec, pack_codes


def quantize_rows(weight: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(packed uint8 codes, fp16 scale, fp16 offset) of every row of a float [rows, dim] table."""
    weight = weight.detach().float().cpu()
    levels = (1 << bits) - 1
    low, high = weight.amin(dim=1), weight.amax(dim=1)
    offset = _half(low, up=False)  # fp16 bounds that still enclose the row: every code fits
    scale = _half((high - offset.float()) / levels, up=True)
    safe = torch.where(scale > 0, scale.float(), torch.ones_like(scale.float()))
    codes = torch.round((weight - offset.float()[:, None]) / safe[:, None]).clamp(0, levels)
    return pack_codes(codes.to(torch.int32), bits), scale, offset


def _half(values: torch.Tensor, up: bool) -> torch.Tensor:
    """`values` in fp16, rounded up (or down) instead of to nearest."""
    half = values.half()
    wrong = half.float() < values if up else half.float() > values
    toward = torch.full_like(half, float("inf") if up else float("-inf"))
    return torch.where(wrong, torch.nextafter(half, toward), half)


def quantized_table(weight: torch.Tensor, group_bits: list[int], group_of_row: np.ndarray) -> QuantizedTable:
    """A QuantizedTable of `weight` where row i is quantized with group_bits[group_of_row[i]]."""
    rows, dim = weight.shape
    members = [np.flatnonzero(group_of_row == g) for g in range(len(group_bits))]
    table = QuantizedTable(rows, dim, list(group_bits), [len(m) for m in members])
    for index, (bits, rows_of_group) in enumerate(zip(group_bits, members)):
        codes, scale, offset = quantize_rows(weight[torch.from_numpy(rows_of_group)], bits)
        getattr(table, f"codes_{index}").copy_(codes)
        getattr(table, f"scale_{index}").copy_(scale)
        getattr(table, f"offset_{index}").copy_(offset)
    if len(group_bits) > 1:
        order = np.empty(rows, dtype=np.int32)
        order[np.concatenate(members)] = np.arange(rows, dtype=np.int32)
        table.order.copy_(torch.from_numpy(order))
    return table


def factorized_table(weight: torch.Tensor, rank: int) -> FactorizedTable:
    """Truncated SVD of `weight`, split evenly between the two factors; padding row 0 stays zero."""
    rows, dim = weight.shape
    if not 1 <= rank < dim:
        raise ValueError(f"rank must be between 1 and the table width - 1 ({dim - 1}); got {rank}")
    u, s, vh = torch.linalg.svd(weight.detach().float().cpu(), full_matrices=False)
    root = s[:rank].sqrt()
    table = FactorizedTable(rows, dim, rank)
    with torch.no_grad():
        table.left.copy_(u[:, :rank] * root)
        table.left[0].zero_()
        table.right.copy_(root[:, None] * vh[:rank])
    return table


def training_counts(data: SequenceData) -> np.ndarray:
    """Interactions per item ([num_items + 1], index 0 = padding) in the training part of every sequence."""
    counts = np.zeros(data.num_items + 1, dtype=np.int64)
    for user in range(data.num_users):
        history, _ = history_and_target(data, user, "valid")
        counts += np.bincount(history, minlength=data.num_items + 1)
    return counts


def frequency_groups(counts: np.ndarray, coverage: float) -> np.ndarray:
    """Group 0 (high bits) for the most frequent items covering `coverage` of the interactions, else 1."""
    order = np.argsort(-counts, kind="stable")
    covered = np.cumsum(counts[order]) / max(int(counts.sum()), 1)
    high = order[: int(np.searchsorted(covered, coverage) + 1)] if coverage > 0 else order[:0]
    groups = np.ones(len(counts), dtype=np.int64)
    groups[high[counts[high] > 0]] = 0
    groups[0] = 1
    return groups


def compressed_spec(table: torch.nn.Module) -> TableSpec:
    """The TableSpec that rebuilds `table`."""
    if isinstance(table, FactorizedTable):
        return TableSpec(method="lowrank", rank=table.left.shape[1])
    rows = [codes.shape[0] for _, codes, _, _ in table.groups()]
    return TableSpec(method="rowwise" if len(rows) == 1 else "mixed", group_bits=table.group_bits, group_rows=rows)


def table_bytes(table: torch.nn.Module) -> int:
    """Bytes of the table's tensors as stored (codes, scales, offsets, order; or both factors)."""
    tensors = list(table.parameters()) + list(table.buffers())
    return int(sum(t.numel() * t.element_size() for t in tensors))

"""Item-table compression: row-wise integers, frequency-aware mixed precision, low rank.

- Row-wise (FBGEMM/TorchRec style, asymmetric): per row, offset = low, scale = (high - low) /
  (2^bits - 1), both rounded to fp16 first; code = round((w - offset) / scale) clipped to
  0..2^bits-1. [low, high] is the row's [min, max] (int8), or below 8 bits the clipping of it
  (CLIP_STEPS off either end) with the least squared error, never worse than [min, max].
- Mixed: the most frequent items (by training interactions) that together make `coverage`
  of the training interactions get `high_bits`, the others `low_bits` (or: as many as fit a
  budget of bits per weight, scales and membership included); padding goes low.
- `fake_quantize_rows`: the same quantizer with a straight-through gradient, for
  quantization-aware recovery (compress/stages/item_table.py).
- Low rank: the truncated SVD, table ≈ (U √S)(√S Vᵀ), rank r; a recovery fine-tune follows
  in the stage.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from compress.data.batching import history_and_target
from compress.data.sequences import SequenceData
from compress.models.item_tables import FactorizedTable, QuantizedTable, TableSpec, pack_codes, row_order
from compress.models.packing import packed_width, padded

ROW_OVERHEAD_BYTES = 4  # the fp16 scale and offset of a row


CLIP_STEPS = (0.0, 0.04, 0.08, 0.12, 0.16)  # shares of a row's range tried off each end (below 8 bits)


def quantize_rows(weight: torch.Tensor, bits: int, clip: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(packed uint8 codes, fp16 scale, fp16 offset) of every row of a float [rows, dim] table."""
    codes, scale, offset = row_codes(weight.detach().float().cpu(), bits, clip)
    return pack_codes(codes, bits), scale, offset


def fake_quantize_rows(weight: torch.Tensor, bits: int, clip: bool = True) -> torch.Tensor:
    """The float rows `quantize_rows` stores for `weight` (dequantized), with a straight-through gradient."""
    codes, scale, offset = row_codes(weight.detach().float(), bits, clip)
    restored = codes.float() * scale.float()[:, None] + offset.float()[:, None]
    return restored + (weight - weight.detach())  # exactly `restored`, the gradient of the identity


def row_codes(weight: torch.Tensor, bits: int, clip: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(int32 codes, fp16 scale, fp16 offset) per row, the clipping of each row's range (CLIP_STEPS off
    either end; none at 8 bits or without `clip`) that gives the least squared error; never worse than min/max."""
    levels = (1 << bits) - 1
    low, high = weight.amin(dim=1), weight.amax(dim=1)
    steps = CLIP_STEPS if bits < 8 and clip else (0.0,)
    best = None
    for cut_low in steps:
        for cut_high in steps:
            span = high - low
            candidate = _codes_in(weight, low + cut_low * span, high - cut_high * span, levels)
            error = ((candidate[0].float() * candidate[1].float()[:, None] + candidate[2].float()[:, None] - weight) ** 2).sum(1)
            if best is None:
                best, best_error = candidate, error
                continue
            better = error < best_error
            best = tuple(torch.where(better[:, None] if b.dim() == 2 else better, c, b) for c, b in zip(candidate, best))
            best_error = torch.minimum(error, best_error)
    return best


def _codes_in(weight: torch.Tensor, low: torch.Tensor, high: torch.Tensor, levels: int):
    """Codes of `weight` on the grid from `low` to `high` (clipped outside); fp16 bounds that enclose [low, high]."""
    offset = _half(low, up=False)
    scale = _half((high - offset.float()) / levels, up=True)
    safe = torch.where(scale > 0, scale.float(), torch.ones_like(scale.float()))
    codes = torch.round((weight - offset.float()[:, None]) / safe[:, None]).clamp(0, levels)
    return codes.to(torch.int32), scale, offset


def _half(values: torch.Tensor, up: bool) -> torch.Tensor:
    """`values` in fp16, rounded up (or down) instead of to nearest."""
    half = values.half()
    wrong = half.float() < values if up else half.float() > values
    toward = torch.full_like(half, float("inf") if up else float("-inf"))
    return torch.where(wrong, torch.nextafter(half, toward), half)


def quantized_table(weight: torch.Tensor, group_bits: list[int], group_of_row: np.ndarray, clip: bool = True) -> QuantizedTable:
    """A QuantizedTable of `weight` where row i is quantized with group_bits[group_of_row[i]]."""
    rows, dim = weight.shape
    members = [np.flatnonzero(group_of_row == g) for g in range(len(group_bits))]
    table = QuantizedTable(rows, dim, list(group_bits), [len(m) for m in members])
    for index, (bits, rows_of_group) in enumerate(zip(group_bits, members)):
        codes, scale, offset = quantize_rows(weight[torch.from_numpy(rows_of_group)], bits, clip)
        getattr(table, f"codes_{index}").copy_(codes)
        getattr(table, f"scale_{index}").copy_(scale)
        getattr(table, f"offset_{index}").copy_(offset)
    if len(group_bits) > 1:
        table.set_group_of_row(torch.from_numpy(np.asarray(group_of_row)))
    return table


class FakeQuantTable(torch.nn.Module):
    """Quantization-aware stand-in for a QuantizedTable during recovery: a float `shadow` table that
    lookup and scoring see through `fake_quantize_rows` (straight-through gradient), so training moves
    the float weights while the model always runs on what `freeze` will store."""

    def __init__(self, weight: torch.Tensor, group_bits: list[int], group_of_row: torch.Tensor, clip: bool = True) -> None:
        super().__init__()
        self.clip = clip
        self.shadow = torch.nn.Parameter(weight.detach().float().clone())
        self.group_bits = list(group_bits)
        self.register_buffer("group_of_row", group_of_row.long().clone(), persistent=False)
        self._cached: tuple[tuple[int, bool], torch.Tensor] | None = None

    @property
    def weight(self) -> torch.Tensor:
        """The table as the quantized model holds it (recomputed after every change of `shadow`)."""
        key = (self.shadow._version, torch.is_grad_enabled())
        if self._cached is None or self._cached[0] != key:
            members = [torch.nonzero(self.group_of_row == g).squeeze(1) for g in range(len(self.group_bits))]
            parts = [fake_quantize_rows(self.shadow[rows], bits, self.clip) for rows, bits in zip(members, self.group_bits)]
            order = row_order(self.group_of_row, len(parts))
            self._cached = (key, parts[0] if len(parts) == 1 else torch.cat(parts)[order])
        return self._cached[1]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight, padding_idx=0)

    def score(self, states: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        return states @ self.weight[start:stop].t()

    def float_parameters(self) -> int:
        return self.shadow.numel()

    def freeze(self) -> QuantizedTable:
        """The QuantizedTable of the current shadow weights (the very rows `weight` gives)."""
        groups = self.group_of_row.cpu().numpy()
        return quantized_table(self.shadow.detach().cpu(), self.group_bits, groups, self.clip).to(self.shadow.device)


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
    return _top_items(counts, int(np.searchsorted(covered, coverage) + 1) if coverage > 0 else 0)


def budget_groups(counts: np.ndarray, dim: int, high_bits: int, low_bits: int, bits_per_weight: float) -> np.ndarray:
    """Group 0 (high bits) for as many of the most frequent items as keep the whole table (codes, fp16
    scales and offsets, membership) within `bits_per_weight` bits per float weight; the rest group 1."""
    rows = len(counts)
    high_row, low_row = (packed_width(dim, b) + ROW_OVERHEAD_BYTES for b in (high_bits, low_bits))
    budget = bits_per_weight * rows * dim / 8 - rows * low_row - packed_width(padded(rows, 1), 1)
    if budget < 0:
        raise ValueError(f"{bits_per_weight} bits per weight is below the int{low_bits} rows' own size "
                         f"({low_row * 8 / dim:.2f} bits per weight with scales)")
    high = rows if high_row <= low_row else int(budget // (high_row - low_row))
    return _top_items(counts, high)


def error_allocation(weight: torch.Tensor, counts: np.ndarray, groups: np.ndarray, high_bits: int, low_bits: int,
                     clip: bool = True) -> np.ndarray:
    """As many high-bit rows as `groups` has, given to the rows where high_bits saves the most squared
    error (low-bit error minus high-bit error, each row quantized both ways) times sqrt(1 + interactions);
    never to padding. Chosen on Beauty's validation split over frequency alone, the norm, and linear
    frequency weights (benchmarks/results/item_table)."""
    howmany = int((groups == 0).sum())
    rows = weight.detach().float().cpu()
    errors = []
    for bits in (high_bits, low_bits):
        codes, scale, offset = row_codes(rows, bits, clip)
        restored = codes.float() * scale.float()[:, None] + offset.float()[:, None]
        errors.append(((restored - rows) ** 2).sum(1).numpy())
    gain = (errors[1] - errors[0]) * np.sqrt(1.0 + counts)
    gain[0] = -np.inf
    chosen = np.ones(len(counts), dtype=np.int64)
    chosen[np.argsort(-gain, kind="stable")[:howmany]] = 0
    return chosen


def _top_items(counts: np.ndarray, howmany: int) -> np.ndarray:
    """Group 0 for the `howmany` most frequent items (never an unseen one, never padding), else 1."""
    high = np.argsort(-counts, kind="stable")[:howmany]
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

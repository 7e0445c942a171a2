"""Compressed item tables: drop-in replacements for the tied `nn.Embedding` of a recommender.

Both serve the input lookup (`forward(ids)`) and the output scoring (`score(states, start, stop)`)
from the compressed form, so the tied table stays tied:

- `QuantizedTable`: row-wise asymmetric integers, row ≈ codes * scale + offset (scale, offset
  fp16 per row), codes packed 8 // bits per byte. Rows fall into groups of different bit
  widths (frequency-aware mixed precision); `order[i]` is row i's place in the concatenated groups.
- `FactorizedTable`: table ≈ left @ right (rank r), scored as (states @ rightᵀ) @ leftᵀ.

`TableSpec` (models/config.py) is what config.json records as `table`; `build_table` rebuilds the empty module that
the saved state dict then fills. How a float table is compressed is compress/methods/item_table.py.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from compress.models.config import TableSpec

class QuantizedTable(nn.Module):
    """Row groups of packed integer codes with fp16 per-row scale and offset; float rows on demand."""

    def __init__(self, num_rows: int, dim: int, group_bits: list[int], group_rows: list[int]) -> None:
        super().__init__()
        if sum(group_rows) != num_rows:
            raise ValueError(f"groups hold {sum(group_rows)} rows, the table {num_rows}")
        self.num_rows, self.dim, self.group_bits = num_rows, dim, list(group_bits)
        for index, (bits, rows) in enumerate(zip(group_bits, group_rows)):
            self.register_buffer(f"codes_{index}", torch.zeros(rows, packed_width(dim, bits), dtype=torch.uint8))
            self.register_buffer(f"scale_{index}", torch.zeros(rows, dtype=torch.float16))
            self.register_buffer(f"offset_{index}", torch.zeros(rows, dtype=torch.float16))
        if len(group_bits) > 1:
            self.register_buffer("order", torch.arange(num_rows, dtype=torch.int32))

    def groups(self) -> list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(bits, packed codes, scale, offset) of every row group."""
        return [(bits, getattr(self, f"codes_{i}"), getattr(self, f"scale_{i}"), getattr(self, f"offset_{i}"))
                for i, bits in enumerate(self.group_bits)]

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized [num_rows, dim] float table."""
        parts = [dequantize(codes, scale, offset, bits, self.dim) for bits, codes, scale, offset in self.groups()]
        table = parts[0] if len(parts) == 1 else torch.cat(parts)[self.order.long()]
        return table

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight)

    def score(self, states: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        return states @ self.weight[start:stop].t()

    def float_parameters(self) -> int:
        """The float weights this table stands for (for parameter counts)."""
        return self.num_rows * self.dim


class FactorizedTable(nn.Module):
    """table ≈ left [num_rows, rank] @ right [rank, dim]; row 0 (padding) of `left` stays zero."""

    def __init__(self, num_rows: int, dim: int, rank: int) -> None:
        super().__init__()
        self.left = nn.Parameter(torch.zeros(num_rows, rank))
        self.right = nn.Parameter(torch.zeros(rank, dim))

    @property
    def weight(self) -> torch.Tensor:
        return self.left @ self.right

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.left, padding_idx=0) @ self.right

    def score(self, states: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        return (states @ self.right.t()) @ self.left[start:stop].t()


def build_table(spec: TableSpec, num_rows: int, dim: int) -> nn.Module:
    """The empty compressed table `spec` describes (weights come from a state dict or a method)."""
    if spec.method == "lowrank":
        return FactorizedTable(num_rows, dim, spec.rank)
    return QuantizedTable(num_rows, dim, spec.group_bits, spec.group_rows)


def packed_width(dim: int, bits: int) -> int:
    """Bytes per row of `dim` codes of `bits` bits."""
    per_byte = 8 // bits
    if dim % per_byte:
        raise ValueError(f"a {bits}-bit table needs a width divisible by {per_byte}; it is {dim}")
    return dim // per_byte


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """[rows, dim] integer codes in 0..2^bits-1 -> [rows, dim * bits / 8] uint8; code j*per + p of a
    row sits in byte j at bits p*bits .. (p+1)*bits - 1 (lowest first)."""
    per_byte = 8 // bits
    grouped = codes.to(torch.int32).reshape(codes.shape[0], -1, per_byte)
    shifts = torch.arange(per_byte, dtype=torch.int32) * bits
    return (grouped << shifts).sum(-1).to(torch.uint8)


def unpack_codes(packed: torch.Tensor, bits: int, dim: int) -> torch.Tensor:
    """Inverse of pack_codes: [rows, dim] int32 codes."""
    per_byte = 8 // bits
    shifts = torch.arange(per_byte, dtype=torch.int32, device=packed.device) * bits
    codes = (packed.to(torch.int32)[..., None] >> shifts) & ((1 << bits) - 1)
    return codes.reshape(packed.shape[0], dim)


def dequantize(packed: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, bits: int, dim: int) -> torch.Tensor:
    """codes * scale + offset, in float32, row by row."""
    return unpack_codes(packed, bits, dim).float() * scale.float()[:, None] + offset.float()[:, None]

"""Compressed item tables: drop-in replacements for the tied `nn.Embedding` of a recommender.

Both serve the input lookup (`forward(ids)`) and the output scoring (`score(states, start, stop)`)
from the compressed form, so the tied table stays tied:

- `QuantizedTable`: row-wise asymmetric integers, row ≈ codes * scale + offset (scale, offset
  fp16 per row), codes packed in little-endian words of whole bytes (8 // bits codes a byte; 3 bits:
  8 codes in 3 bytes). Rows fall into groups of different bit widths (frequency-aware mixed
  precision); `membership` holds each row's group, packed (1 bit a row for two groups): rows keep
  their order within the concatenated groups.
- `FactorizedTable`: table ≈ left @ right (rank r), scored as (states @ rightᵀ) @ leftᵀ.

`TableSpec` (models/config.py) is what config.json records as `table`; `build_table` rebuilds the empty module that
the saved state dict then fills. How a float table is compressed is compress/methods/item_table.py.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from compress.models.config import TableSpec
from compress.models.packing import membership_bits, packed_width, padded, word_layout

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
        if len(group_bits) > 1:  # the group of every row, packed (1 bit a row for two groups)
            width = membership_bits(len(group_bits))
            self.register_buffer("membership", torch.zeros(1, packed_width(padded(num_rows, width), width), dtype=torch.uint8))
        self._located: tuple | None = None  # (membership version key, groups, index, members): _locations' cache

    def _membership_key(self) -> tuple:
        """What changes when the row -> group map may have changed (one group: the codes' storage)."""
        source = self.membership if len(self.group_bits) > 1 else self.codes_0
        return (source.data_ptr(), source._version, source.device)

    def groups(self) -> list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(bits, packed codes, scale, offset) of every row group."""
        return [(bits, getattr(self, f"codes_{i}"), getattr(self, f"scale_{i}"), getattr(self, f"offset_{i}"))
                for i, bits in enumerate(self.group_bits)]

    def group_of_row(self) -> torch.Tensor:
        """[num_rows] int64: the group each row is stored in."""
        if len(self.group_bits) == 1:
            return torch.zeros(self.num_rows, dtype=torch.int64, device=self.codes_0.device)
        width = membership_bits(len(self.group_bits))
        values = unpack_codes(self.membership, width, self.membership.shape[1] * 8 // width)
        return values[0, : self.num_rows].long()

    def set_group_of_row(self, groups: torch.Tensor) -> None:
        """Store `groups` ([num_rows], group of every row) as the packed membership."""
        width = membership_bits(len(self.group_bits))
        values = torch.zeros(1, padded(self.num_rows, width), dtype=torch.int32)
        values[0, : self.num_rows] = groups.to(torch.int32).cpu()
        self.membership.copy_(pack_codes(values, width))

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized [num_rows, dim] float table."""
        parts = [dequantize(codes, scale, offset, bits, self.dim) for bits, codes, scale, offset in self.groups()]
        if len(parts) == 1:
            return parts[0]
        if _tracing():
            return torch.cat(parts)[row_order(self.group_of_row(), len(parts))]  # traced from the membership
        table = torch.empty(self.num_rows, self.dim, dtype=parts[0].dtype, device=parts[0].device)
        for rows, part in zip(self._locations()[2], parts):
            table.index_copy_(0, rows, part)
        return table

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """The float rows of `ids`: in eager mode only those rows are dequantized (a history of 50
        events, not the whole catalogue); an export traces the whole table, which the exporter folds."""
        if _tracing():
            return F.embedding(ids, self.weight)
        flat = ids.reshape(-1)
        group_of_row, index_in_group, _ = self._locations()
        groups, rows = group_of_row[flat], index_in_group[flat]
        out = torch.empty(flat.numel(), self.dim, dtype=torch.float32, device=ids.device)
        for group, (bits, codes, scale, offset) in enumerate(self.groups()):
            where = (groups == group).nonzero().squeeze(1)
            if where.numel():
                picked = rows[where]
                out[where] = dequantize(codes[picked], scale[picked], offset[picked], bits, self.dim)
        return out.reshape(*ids.shape, self.dim)

    def _locations(self) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """The group of every row, its index within the group, and each group's rows (ids in order);
        cached until the membership buffer changes (load_state_dict, set_group_of_row, a move to
        another device)."""
        key = self._membership_key()
        if self._located is None or self._located[0] != key:
            groups = self.group_of_row()
            members = [(groups == group).nonzero().squeeze(1) for group in range(len(self.group_bits))]
            index = torch.empty_like(groups)
            for rows in members:
                index[rows] = torch.arange(len(rows), device=rows.device)
            self._located = (key, groups, index, members)
        return self._located[1:]

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


def _tracing() -> bool:
    """True while torch.onnx, torch.jit or torch.compile traces the model: compute from the buffers alone."""
    return torch.onnx.is_in_onnx_export() or torch.jit.is_tracing() or torch.compiler.is_compiling()


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """[rows, dim] integer codes in 0..2^bits-1 -> [rows, packed_width(dim, bits)] uint8. Codes are packed in
    little-endian words (word_layout): code p of a word sits at bits p*bits .. (p+1)*bits - 1 of it."""
    per_word, nbytes = word_layout(bits)
    grouped = codes.to(torch.int64).reshape(codes.shape[0], -1, per_word)
    words = (grouped << (torch.arange(per_word, dtype=torch.int64) * bits)).sum(-1)
    parts = (words[..., None] >> (torch.arange(nbytes, dtype=torch.int64) * 8)) & 255
    return parts.reshape(codes.shape[0], -1).to(torch.uint8)


def unpack_codes(packed: torch.Tensor, bits: int, dim: int) -> torch.Tensor:
    """Inverse of pack_codes: [rows, dim] int32 codes."""
    per_word, nbytes = word_layout(bits)
    device = packed.device
    if nbytes == 1:
        return _byte_codes(packed, bits, dim).to(torch.int32)
    parts = packed.to(torch.int64).reshape(packed.shape[0], -1, nbytes)
    words = (parts << (torch.arange(nbytes, dtype=torch.int64, device=device) * 8)).sum(-1)
    codes = (words[..., None] >> (torch.arange(per_word, dtype=torch.int64, device=device) * bits)) & ((1 << bits) - 1)
    return codes.reshape(packed.shape[0], dim).to(torch.int32)


def _byte_codes(packed: torch.Tensor, bits: int, dim: int) -> torch.Tensor:
    """[rows, dim] uint8 codes of 1, 2, 4 or 8 bits (whole codes within a byte), shifted out in uint8."""
    if bits == 8:
        return packed
    shifts = torch.arange(0, 8, bits, dtype=torch.uint8, device=packed.device)
    return ((packed[..., None] >> shifts) & ((1 << bits) - 1)).reshape(packed.shape[0], dim)


def row_order(groups: torch.Tensor, count: int) -> torch.Tensor:
    """[rows] int64: where each row sits in the concatenation of the `count` groups (rows of a group keep their order)."""
    order = torch.zeros_like(groups)
    start = 0
    for g in range(count):
        member = groups == g
        order = torch.where(member, torch.cumsum(member.long(), 0) - 1 + start, order)
        start += int(member.sum())
    return order


def dequantize(packed: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, bits: int, dim: int) -> torch.Tensor:
    """codes * scale + offset, in float32, row by row."""
    codes = _byte_codes(packed, bits, dim) if word_layout(bits)[1] == 1 else unpack_codes(packed, bits, dim)
    return codes.float() * scale.float()[:, None] + offset.float()[:, None]

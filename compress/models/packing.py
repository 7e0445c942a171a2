"""The bit layout of packed item-table codes, torch-free (shared by the PyTorch table and its ONNX form).

Codes of `bits` bits are packed in little-endian words of whole bytes: the fewest bytes that
hold whole codes (8 // bits codes a byte for 1, 2, 4, 8 bits; 3 bits: 8 codes in 3 bytes).
"""

from __future__ import annotations

import math


def word_layout(bits: int) -> tuple[int, int]:
    """(codes, bytes) of one packed word of `bits`-bit codes (1..8)."""
    if not 1 <= bits <= 8:
        raise ValueError(f"codes have 1 to 8 bits; got {bits}")
    word = math.lcm(bits, 8)
    return word // bits, word // 8


def packed_width(dim: int, bits: int) -> int:
    """Bytes per row of `dim` codes of `bits` bits."""
    codes, nbytes = word_layout(bits)
    if dim % codes:
        raise ValueError(f"a {bits}-bit table needs a width divisible by {codes}; it is {dim}")
    return dim // codes * nbytes


def membership_bits(groups: int) -> int:
    """Bits that number `groups` row groups."""
    return max(1, (groups - 1).bit_length())


def padded(rows: int, bits: int) -> int:
    """`rows` rounded up to whole packed words of `bits`-bit codes."""
    return -(-rows // word_layout(bits)[0]) * word_layout(bits)[0]

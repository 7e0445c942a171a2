"""Left padding of item-id sequences (numpy only: shared by training batches, the bench and torch-free serving)."""

from __future__ import annotations

import numpy as np


def left_pad(rows: list[np.ndarray], length: int) -> np.ndarray:
    """Stack 1-D int arrays into [len(rows), length], right-aligned, 0 on the left."""
    out = np.zeros((len(rows), length), dtype=np.int64)
    for i, row in enumerate(rows):
        row = row[-length:]
        if len(row):
            out[i, length - len(row) :] = row
    return out

"""Data: readers per format, a synthetic generator, preprocessing, leave-one-out batches.

The recipe's section (`DataConfig`, in config.py) imports without pandas or torch; `load_data`
and `SequenceData` are imported on first use.
"""

from __future__ import annotations

from typing import Any

from compress.data.config import ColumnNames, DataConfig

__all__ = ["ColumnNames", "DataConfig", "SequenceData", "load_data"]
_LAZY = {"load_data": "compress.data.loading", "SequenceData": "compress.data.sequences"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'compress.data' has no attribute {name!r}")

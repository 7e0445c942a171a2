"""Read or generate a recipe's interactions and turn them into user sequences."""

from __future__ import annotations

import time

from compress.data.config import DataConfig
from compress.data.readers import read_interactions
from compress.data.sequences import SequenceData, build_sequences, handle_duplicates
from compress.data.synthetic import generate


def load_data(config: DataConfig, seed: int) -> SequenceData:
    """Read or generate the interactions and turn them into remapped user sequences."""
    started = time.perf_counter()
    duplicates = 0
    if config.source == "synthetic":
        table = generate(config.synthetic, seed)
    else:
        assert config.path is not None
        table = read_interactions(
            config.path,
            config.format,
            user_col=config.columns.user,
            item_col=config.columns.item,
            time_col=config.columns.timestamp,
            header=config.header,
        )
        table, duplicates = handle_duplicates(table, config.duplicates, str(config.path))
    data = build_sequences(table, kcore=config.kcore)
    data.dropped_duplicates = duplicates
    data.load_seconds = time.perf_counter() - started
    return data

"""Data: readers per format, a synthetic generator, preprocessing, leave-one-out batches."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from compress.data.readers import read_interactions
from compress.data.sequences import SequenceData, build_sequences, handle_duplicates
from compress.data.synthetic import SyntheticConfig, generate

__all__ = ["ColumnNames", "DataConfig", "SequenceData", "load_data"]


class ColumnNames(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str = Field("user_id", description="User id column (csv/tsv/parquet).")
    item: str = Field("item_id", description="Item id column (csv/tsv/parquet).")
    timestamp: str | None = Field("timestamp", description="Timestamp column, if any; rows are sorted by it.")


class DataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: Literal["synthetic", "file"] = Field("synthetic", description="Embedded synthetic data or a file.")
    path: Path | None = Field(None, description="Data file, for source: file.")
    format: Literal["auto", "pairs", "user_lines", "csv", "tsv", "parquet", "atomic"] = Field(
        "auto", description="File format; auto detects it from the extension or the first lines."
    )
    columns: ColumnNames = Field(default_factory=ColumnNames, description="Column names for tables.")
    header: bool = Field(True, description="Whether a csv/tsv file has a header row.")
    duplicates: Literal["error", "drop", "keep"] = Field(
        "error", description="Rows repeated exactly in a file: an error, dropped (first kept), or kept as repeats."
    )
    kcore: int = Field(0, ge=0, description="Keep only users and items with at least k interactions (0: off).")
    max_len: int = Field(50, ge=2, description="Most recent items a model sees.")
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig, description="Synthetic data size.")

    @model_validator(mode="after")
    def _check_path(self) -> "DataConfig":
        if self.source == "file" and self.path is None:
            raise ValueError("source is 'file' but no path is given: set data.path")
        return self


def load_data(config: DataConfig, seed: int) -> SequenceData:
    """Read or generate the interactions and turn them into remapped user sequences."""
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
    return data

"""The recipe's `data` section (pydantic only: importable without pandas or torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

DataFormat = Literal["auto", "pairs", "user_lines", "csv", "tsv", "parquet", "atomic"]
FORMATS: tuple[str, ...] = get_args(DataFormat)
DuplicatePolicy = Literal["error", "drop", "keep"]
FORMAT_HELP = (
    "csv, tsv or parquet tables (columns user_id, item_id and optionally timestamp; rename with data.columns), "
    "pairs (`user item` per line, whitespace-separated), user_lines (`user item item ...` per line), "
    "atomic (RecBole .inter); auto (default) detects the format from the extension or the first lines"
)


class SyntheticConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    users: int = Field(1000, ge=10, description="Number of users.")
    items: int = Field(500, ge=10, description="Number of items.")
    clusters: int = Field(10, ge=1, description="Number of interest clusters.")
    min_len: int = Field(8, ge=3, description="Shortest user sequence.")
    max_len: int = Field(30, ge=3, description="Longest user sequence.")
    successors: int = Field(3, ge=1, description="Fixed successor items per item.")
    transition_prob: float = Field(0.6, ge=0, le=1, description="Chance the next item follows a successor link.")
    popularity_skew: float = Field(1.0, ge=0, description="Zipf exponent of item popularity.")
    seed: int | None = Field(
        None, description="Seed of the generator (null: the recipe's seed); set it to vary training seeds on fixed data."
    )

    @model_validator(mode="after")
    def _check(self) -> "SyntheticConfig":
        if self.max_len < self.min_len:
            raise ValueError(f"max_len ({self.max_len}) must be >= min_len ({self.min_len})")
        if self.items < self.clusters * 2:
            raise ValueError(f"items ({self.items}) must be at least twice clusters ({self.clusters})")
        if self.max_len > self.items:
            raise ValueError(f"max_len ({self.max_len}) must not exceed items ({self.items}): items never repeat")
        return self


class ColumnNames(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str = Field("user_id", description="User id column (csv/tsv/parquet).")
    item: str = Field("item_id", description="Item id column (csv/tsv/parquet).")
    timestamp: str | None = Field("timestamp", description="Timestamp column, if any; rows are sorted by it.")


class DataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: Literal["synthetic", "file"] = Field(
        "synthetic", description="Embedded synthetic data or a file (default: file when `path` is given, else synthetic)."
    )
    path: Path | None = Field(None, description="Data file (implies source: file). Formats: " + FORMAT_HELP)
    format: DataFormat = Field("auto", description="File format; auto detects it from the extension or the first lines.")
    columns: ColumnNames = Field(default_factory=ColumnNames, description="Column names for tables.")
    header: bool = Field(True, description="Whether a csv/tsv file has a header row.")
    duplicates: DuplicatePolicy = Field(
        "error", description="Rows repeated exactly in a file: an error, dropped (first kept), or kept as repeats."
    )
    kcore: int = Field(0, ge=0, description="Keep only users and items with at least k interactions (0: off).")
    max_len: int = Field(50, ge=2, description="Most recent items a model sees.")
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig, description="Synthetic data size.")

    @model_validator(mode="before")
    @classmethod
    def _path_implies_file(cls, value: Any) -> Any:
        """A `path` with no `source` means a file; an explicit `source: synthetic` with a path is a mistake."""
        if isinstance(value, dict) and value.get("path") is not None:
            if "source" not in value:
                return {**value, "source": "file"}
            if value["source"] == "synthetic":
                raise ValueError(
                    f"path is set ({value['path']}) but source is 'synthetic', which would ignore it: "
                    "set data.source: file (on the command line: -o data.source=file), or remove data.path"
                )
        return value

    @model_validator(mode="after")
    def _check_path(self) -> "DataConfig":
        if self.source == "file" and self.path is None:
            raise ValueError("source is 'file' but no path is given: set data.path")
        return self

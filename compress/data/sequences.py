"""Preprocessing in named steps: sort by time, k-core filter, drop short users, remap ids."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from compress.errors import DataError

MIN_INTERACTIONS = 3  # one to train on, one to validate, one to test


@dataclass
class SequenceData:
    """User sequences as one flat array of internal item ids (1..num_items) plus offsets.

    `item_ids[i - 1]` is the original id of internal item `i`; 0 is padding.
    """

    offsets: np.ndarray
    items: np.ndarray
    num_items: int
    item_ids: np.ndarray
    user_ids: np.ndarray
    dropped_users: int = 0
    dropped_duplicates: int = 0

    @property
    def num_users(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def sequence(self, user: int) -> np.ndarray:
        return self.items[self.offsets[user] : self.offsets[user + 1]]

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for array in (self.offsets, self.items, np.array([self.num_items])):
            digest.update(np.ascontiguousarray(array, dtype=np.int64).tobytes())
        return digest.hexdigest()[:16]

    def notes(self) -> list[str]:
        """What preprocessing left out, for the run log."""
        notes = []
        if self.dropped_users:
            notes.append(f"dropped {self.dropped_users:,} users with fewer than {MIN_INTERACTIONS} interactions")
        if self.dropped_duplicates:
            notes.append(f"dropped {self.dropped_duplicates:,} duplicate rows (data.duplicates: drop)")
        return notes

    def stats(self) -> dict[str, float | int]:
        lengths = self.lengths
        return {
            "users": self.num_users,
            "items": self.num_items,
            "interactions": int(lengths.sum()),
            "dropped_users": self.dropped_users,
            "dropped_duplicates": self.dropped_duplicates,
            "seq_len_min": int(lengths.min()),
            "seq_len_median": float(np.median(lengths)),
            "seq_len_mean": round(float(lengths.mean()), 2),
            "seq_len_max": int(lengths.max()),
            "density": round(float(lengths.sum()) / (self.num_users * self.num_items), 6),
        }


def build_sequences(table: pd.DataFrame, kcore: int = 0) -> SequenceData:
    """Turn an interactions table into time-ordered, remapped user sequences."""
    table = sort_by_time(table)
    if kcore > 0:
        table = kcore_filter(table, kcore)
    table, dropped = drop_short_users(table)
    if table.empty:
        raise DataError(
            f"no user has at least {MIN_INTERACTIONS} interactions after filtering",
            "lower `data.kcore` or check the data file",
        )
    return remap(table, dropped)


def handle_duplicates(table: pd.DataFrame, policy: str, source: str) -> tuple[pd.DataFrame, int]:
    """Rows equal in every column (user, item, timestamp): `error` (DataError), `drop` (keep the first) or `keep`."""
    repeated = table.duplicated(keep="first").to_numpy()
    count = int(repeated.sum())
    if count == 0 or policy == "keep":
        return table, 0
    if policy == "error":
        row = int(np.argmax(repeated))
        same = (table == table.iloc[row]).all(axis=1).to_numpy()
        first = int(np.argmax(same))
        shown = ", ".join(f"{col} {table.iloc[row][col]!r}" for col in table.columns)
        raise DataError(
            f"{source}: {count:,} duplicate row(s); e.g. row {row + 1} repeats row {first + 1} ({shown})",
            "set data.duplicates: drop (keep the first of each) or keep (they are repeated interactions)",
        )
    return table[~repeated].reset_index(drop=True), count


def sort_by_time(table: pd.DataFrame) -> pd.DataFrame:
    """Group rows by user, ordered by timestamp when there is one; ties keep file order."""
    keys = ["user", "timestamp"] if "timestamp" in table else ["user"]
    return table.sort_values(keys, kind="stable").reset_index(drop=True)


def kcore_filter(table: pd.DataFrame, k: int) -> pd.DataFrame:
    """Repeatedly drop users and items with fewer than `k` interactions until none are left."""
    while True:
        user_counts = table["user"].map(table["user"].value_counts())
        item_counts = table["item"].map(table["item"].value_counts())
        keep = (user_counts >= k) & (item_counts >= k)
        if keep.all():
            return table
        table = table[keep.to_numpy()].reset_index(drop=True)


def drop_short_users(table: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    counts = table["user"].map(table["user"].value_counts())
    keep = (counts >= MIN_INTERACTIONS).to_numpy()
    dropped = int(table.loc[~keep, "user"].nunique())
    return table[keep].reset_index(drop=True), dropped


def remap(table: pd.DataFrame, dropped_users: int = 0) -> SequenceData:
    """Items to 1..N in sorted original-id order (so 1..N ids stay as they were)."""
    item_codes, item_ids = pd.factorize(table["item"], sort=True)
    user_codes, user_ids = pd.factorize(table["user"], sort=False)
    counts = np.bincount(user_codes, minlength=len(user_ids))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return SequenceData(
        offsets=offsets,
        items=item_codes.astype(np.int64) + 1,
        num_items=len(item_ids),
        item_ids=np.asarray(item_ids),
        user_ids=np.asarray(user_ids),
        dropped_users=dropped_users,
    )

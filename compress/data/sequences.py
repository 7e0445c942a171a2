"""Preprocessing in named steps: k-core filter, drop short users, sort by time, remap ids."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from compress.errors import DataError, shown as shown_value

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
    load_seconds: float = 0.0  # reading and preprocessing, for the run log

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
    """Turn an interactions table into time-ordered, remapped user sequences.

    The steps run on integer codes (int32 where they fit) and one argsort, not on the table:
    a 50M-row file is not copied column by column at every step.
    """
    users, user_ids = _codes(table["user"])
    items, item_ids = _codes(table["item"])
    keep = kcore_mask(users, items, kcore) if kcore > 0 else np.ones(len(users), dtype=bool)
    keep, dropped = drop_short_users(users, keep)
    if not keep.any():
        raise DataError(
            f"no user has at least {MIN_INTERACTIONS} interactions after filtering",
            "lower `data.kcore` or check the data file",
        )
    order = time_order(users, table["timestamp"].to_numpy() if "timestamp" in table else None, keep)
    return remap(users[order], items[order], user_ids, item_ids, dropped)


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
        shown = ", ".join(f"{col} {shown_value(table.iloc[row][col])}" for col in table.columns)
        raise DataError(
            f"{source}: {count:,} duplicate row(s); e.g. row {row + 1} repeats row {first + 1} ({shown})",
            "set data.duplicates: drop (keep the first of each) or keep (they are repeated interactions)",
        )
    return table[~repeated].reset_index(drop=True), count


def _codes(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Codes 0..n-1 of a column's values in sorted order of the values, and the values."""
    if isinstance(column.dtype, pd.CategoricalDtype):  # its categories in value order, not theirs
        column = column.cat.reorder_categories(column.cat.categories.sort_values())
        codes, uniques = np.asarray(column.cat.codes), np.asarray(column.cat.categories)
        return codes.astype(np.int32 if len(uniques) < 2**31 else np.int64, copy=False), uniques
    values = column.to_numpy()
    if values.dtype.kind in "iu" and len(values) and 0 <= values.min() and values.max() < 4 * len(values) + 1024:
        present = np.bincount(values) > 0  # small non-negative integer ids: no hashing, no sort
        code_of = np.cumsum(present, dtype=np.int64) - 1
        codes, uniques = code_of[values], np.flatnonzero(present).astype(values.dtype)
    else:
        codes, uniques = pd.factorize(column, sort=True)
    dtype = np.int32 if len(uniques) < 2**31 else np.int64
    return codes.astype(dtype, copy=False), np.asarray(uniques)


def time_order(users: np.ndarray, timestamps: np.ndarray | None, keep: np.ndarray) -> np.ndarray:
    """Kept rows grouped by user (in user-id order), by timestamp when there is one; ties keep file order."""
    rows = np.flatnonzero(keep)
    if timestamps is None:
        return rows[np.argsort(users[rows], kind="stable")]
    return rows[np.lexsort((timestamps[rows], users[rows]))]  # lexsort is stable


def kcore_mask(users: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    """Rows left after repeatedly dropping users and items with fewer than `k` interactions."""
    keep = np.ones(len(users), dtype=bool)
    while True:
        user_counts = np.bincount(users[keep], minlength=int(users.max(initial=-1)) + 1)
        item_counts = np.bincount(items[keep], minlength=int(items.max(initial=-1)) + 1)
        now = keep & (user_counts[users] >= k) & (item_counts[items] >= k)
        if now.sum() == keep.sum():
            return keep
        keep = now


def kcore_filter(table: pd.DataFrame, k: int) -> pd.DataFrame:
    """The table's rows left by `kcore_mask`."""
    keep = kcore_mask(_codes(table["user"])[0], _codes(table["item"])[0], k)
    return table[keep].reset_index(drop=True)


def drop_short_users(users: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, int]:
    """`keep` without the rows of users left with fewer than MIN_INTERACTIONS; and how many users went."""
    counts = np.bincount(users[keep], minlength=int(users.max(initial=-1)) + 1)
    short = (counts > 0) & (counts < MIN_INTERACTIONS)
    return keep & ~short[users], int(short.sum())


def remap(
    users: np.ndarray, items: np.ndarray, user_ids: np.ndarray, item_ids: np.ndarray, dropped_users: int = 0
) -> SequenceData:
    """Rows sorted by user: items to 1..N in sorted original-id order (so 1..N ids stay as they were),
    users in sorted original-id order; ids no kept row uses are left out."""
    user_present = np.bincount(users, minlength=len(user_ids)) > 0
    item_present = np.bincount(items, minlength=len(item_ids)) > 0
    new_item = np.cumsum(item_present)  # code -> 1..N among the items present
    counts = np.bincount(users, minlength=len(user_ids))[user_present]
    return SequenceData(
        offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        items=new_item[items].astype(np.int64),
        num_items=int(item_present.sum()),
        item_ids=item_ids[item_present],
        user_ids=user_ids[user_present],
        dropped_users=dropped_users,
    )

"""Readers: each turns one file format into an interactions table (user, item[, timestamp]).

Formats (`format:` in the recipe's `data` section):
- `pairs`: SASRec style, one `user item` pair per line, whitespace-separated, already in time
  order within each user (e.g. SASRec's `ml-1m.txt`).
- `user_lines`: one user per line, `user item1 item2 ...`, items in time order (S3-Rec's `Beauty.txt`).
- `csv` / `tsv`: a delimited table with a header; the user, item and optional timestamp
  column names are set in the recipe (`columns:`). `tsv` without a header (e.g. MovieLens
  `u.data`) is read with `header: false` and columns named by position: `0`, `1`, `3`.
- `parquet`: a Parquet table with the same column names as csv.
- `atomic`: a RecBole atomic `.inter` file: tab-separated, header fields typed `name:type`
  (`user_id:token`, `item_id:token`, `timestamp:float`).
`auto` picks by extension (.csv, .tsv, .parquet, .inter) or, for .txt/.data files, by the
shape of the first lines (two integers per line: `pairs`; more: `user_lines`).

Every reader returns a DataFrame with columns `user`, `item` and, when present, `timestamp`,
in file order. Ids are kept as read (strings or integers); preprocessing remaps them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from compress.data.config import FORMATS
from compress.errors import DataError

_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet", ".inter": "atomic"}


def read_interactions(
    path: Path,
    fmt: str = "auto",
    user_col: str = "user_id",
    item_col: str = "item_id",
    time_col: str | None = "timestamp",
    header: bool = True,
) -> pd.DataFrame:
    """Read `path` in format `fmt` into a (user, item[, timestamp]) table."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"data path {path} is a folder, not a file", "set `data.path` to the interactions file")
    if not path.is_file():
        raise DataError(f"data file not found: {path}", "check `data.path` in the recipe (or -o data.path=...)")
    if path.stat().st_size == 0:
        raise DataError(f"data file is empty: {path}")
    try:
        table = _read_format(path, fmt, user_col, item_col, time_col, header)
    except OSError as exc:  # permission denied, I/O error: the file exists but cannot be read
        raise DataError(f"cannot read {path}: {exc.strerror or exc}", "check the file's permissions") from None
    if table.empty:
        raise DataError(f"no interactions in {path}")
    return table


def _read_format(
    path: Path, fmt: str, user_col: str, item_col: str, time_col: str | None, header: bool
) -> pd.DataFrame:
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "pairs":
        table = _read_pairs(path)
    elif fmt == "user_lines":
        table = _read_user_lines(path)
    elif fmt in ("csv", "tsv", "parquet"):
        table = _read_table(path, fmt, user_col, item_col, time_col, header)
    elif fmt == "atomic":
        table = _read_atomic(path)
    else:
        raise DataError(f"unknown data format {fmt!r}", f"use one of {', '.join(FORMATS)}")
    return table


def detect_format(path: Path) -> str:
    """Guess the format from the extension, else from the first non-empty lines."""
    if path.suffix.lower() in _EXTENSIONS:
        return _EXTENSIONS[path.suffix.lower()]
    lines = _head_lines(path, 20)
    if not lines:
        raise DataError(f"data file has no content: {path}")
    widths = {len(line.split()) for line in lines}
    if widths == {2}:
        return "pairs"
    if min(widths) >= 2 and all(_is_int_tokens(line.split()) for line in lines):
        return "user_lines"
    raise DataError(
        f"cannot detect the format of {path}",
        "set `data.format` to one of pairs, user_lines, csv, tsv, parquet, atomic",
    )


def _head_lines(path: Path, count: int) -> list[str]:
    lines: list[str] = []
    with open(path, "rb") as handle:
        for raw in handle:
            text = _decode(raw, path, len(lines) + 1).strip()
            if text:
                lines.append(text)
            if len(lines) >= count:
                break
    return lines


def _decode(raw: bytes, path: Path, line_no: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: line {line_no} is not valid UTF-8 ({exc.reason})") from None


def _is_int_tokens(tokens: list[str]) -> bool:
    return all(token.lstrip("-").isdigit() for token in tokens)


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_no = data[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line_no} is not valid UTF-8 ({exc.reason})") from None


def _parse_int_tokens(tokens: np.ndarray, path: Path, line_of_token: np.ndarray) -> np.ndarray:
    """Vectorised int parse of string tokens; the first bad one is reported with its line."""
    numeric = pd.to_numeric(pd.Series(tokens), errors="coerce")
    bad = numeric.isna().to_numpy() | (numeric.to_numpy() % 1 != 0)
    if bad.any():
        first = int(np.argmax(bad))
        raise DataError(
            f"{path}: line {int(line_of_token[first])}: id {tokens[first]!r} is not an integer",
            "this format needs integer ids; use csv/tsv/parquet for string ids",
        )
    if numeric.dtype != np.int64 and (first := _first_too_large(tokens, numeric.to_numpy())) is not None:
        raise DataError(
            f"{path}: line {int(line_of_token[first])}: id {tokens[first]!r} does not fit in a 64-bit integer",
            "this format reads ids as 64-bit integers (at most 19 digits); csv/tsv/parquet keep longer ids as strings",
        )
    values = numeric.to_numpy().astype(np.int64)
    if (values < 0).any():
        first = int(np.argmax(values < 0))
        raise DataError(f"{path}: line {int(line_of_token[first])}: negative id {values[first]}")
    return values


def _first_too_large(tokens: np.ndarray, values: np.ndarray) -> int | None:
    """Index of the first token outside the int64 range (`values`: their uint64/float64 parse), else None."""
    for index in np.flatnonzero(np.abs(values.astype(np.float64)) >= 2.0**62):  # float64 is inexact near 2**63
        try:
            fits = -(2**63) <= int(tokens[index]) < 2**63
        except ValueError:  # `1e30`: parsed as a float
            fits = abs(values[index]) < 2.0**63
        if not fits:
            return int(index)
    return None


def _read_pairs(path: Path) -> pd.DataFrame:
    """Fast C parse; on any problem, a line-by-line pass finds and names the bad line."""
    try:
        table = pd.read_csv(
            path, sep=r"\s+", header=None, names=["user", "item"], dtype=np.int64, engine="c", encoding="utf-8"
        )
        if len(table) and (table.to_numpy() >= 0).all():
            return table
    except (ValueError, OverflowError, pd.errors.ParserError, UnicodeDecodeError):  # the checked pass says which line
        pass
    return _read_pairs_checked(path)


def _read_pairs_checked(path: Path) -> pd.DataFrame:
    lines = [line for line in _read_text(path).splitlines()]
    line_numbers = np.arange(1, len(lines) + 1)
    keep = np.array([bool(line.strip()) for line in lines])
    split = [line.split() for line, k in zip(lines, keep) if k]
    line_numbers = line_numbers[keep]
    widths = np.fromiter((len(tokens) for tokens in split), dtype=np.int64, count=len(split))
    if (widths != 2).any():
        first = int(np.argmax(widths != 2))
        line = " ".join(split[first])
        raise DataError(
            f"{path}: line {int(line_numbers[first])}: expected `user item`, got {widths[first]} fields"
            + _delimiter_note(line),
            "a `pairs` file has exactly two whitespace-separated integers per line",
        )
    tokens = np.array(split, dtype=object).reshape(-1)
    ids = _parse_int_tokens(tokens, path, np.repeat(line_numbers, 2)).reshape(-1, 2)
    return pd.DataFrame({"user": ids[:, 0], "item": ids[:, 1]})


def _read_user_lines(path: Path) -> pd.DataFrame:
    lines = _read_text(path).splitlines()
    users, items, token_lines = [], [], []
    for line_no, line in enumerate(lines, start=1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) < 2:
            raise DataError(f"{path}: line {line_no}: a user with no items", "each line is `user item1 item2 ...`")
        users.append(tokens[0])
        items.append(tokens[1:])
        token_lines.append(line_no)
    lengths = np.array([len(row) for row in items], dtype=np.int64)
    line_of_item = np.repeat(np.array(token_lines), lengths)
    user_ids = _parse_int_tokens(np.array(users, dtype=object), path, np.array(token_lines))
    item_ids = _parse_int_tokens(np.array([t for row in items for t in row], dtype=object), path, line_of_item)
    return pd.DataFrame({"user": np.repeat(user_ids, lengths), "item": item_ids})


def _read_table(
    path: Path, fmt: str, user_col: str, item_col: str, time_col: str | None, header: bool
) -> pd.DataFrame:
    """csv/tsv/parquet through pyarrow: only the user, item and timestamp columns are read, and
    string ids come back dictionary-encoded (pandas categoricals), not as a Python string per row."""
    import pyarrow as pa

    try:
        names = _column_names(path, fmt, header)
        missing = [c for c in (user_col, item_col) if c not in names]
        if missing:
            raise DataError(
                f"{path}: column(s) {missing} not found; the file has {names}"
                + (_delimiter_note(str(names[0])) if len(names) == 1 else ""),
                "set `data.columns.user` / `data.columns.item` (and `timestamp`) to the file's column names",
            )
        wanted = [user_col, item_col] + ([time_col] if time_col and time_col in names else [])
        arrow = _read_columns(path, fmt, header, names, wanted)
    except pa.ArrowInvalid as exc:
        if "UTF8" in str(exc):
            raise DataError(f"{path}: not valid UTF-8 ({exc})") from None
        raise DataError(f"cannot read {path} as {fmt}: {exc}") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path} as {fmt}: {exc}") from None
    user, item = arrow.column(user_col), arrow.column(item_col)
    empty = _empty_strings(user) | _empty_strings(item)
    if empty.any():
        raise DataError(f"{path}: row {int(np.argmax(empty)) + 1} has an empty user or item id")
    table = pd.DataFrame({"user": _ids(user), "item": _ids(item)})
    if len(wanted) == 3:
        table["timestamp"] = _arrow_timestamps(arrow.column(time_col), path)
    return table


def _column_names(path: Path, fmt: str, header: bool) -> list[str]:
    """The file's column names (without a header: "0", "1", ... by position)."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if fmt == "parquet":
        return list(pq.read_schema(path).names)
    reader = pacsv.open_csv(path, read_options=pacsv.ReadOptions(autogenerate_column_names=not header),
                            parse_options=pacsv.ParseOptions(delimiter="," if fmt == "csv" else "\t"))
    names = list(reader.schema.names)
    return names if header else [str(i) for i in range(len(names))]


def _read_columns(path: Path, fmt: str, header: bool, names: list[str], wanted: list[str]):
    """A pyarrow Table of the `wanted` columns; csv/tsv fields read as strings, as written."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if fmt == "parquet":
        return _read_parquet(path, pq.ParquetFile(path), wanted)
    return pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(column_names=None if header else names),
        parse_options=pacsv.ParseOptions(delimiter="," if fmt == "csv" else "\t"),
        convert_options=pacsv.ConvertOptions(
            include_columns=wanted, column_types={c: pa.string() for c in wanted}, strings_can_be_null=False,
        ),
    )


def _read_parquet(path: Path, file, wanted: list[str]):
    """Numeric columns are copied batch by batch into arrays of their final size (one copy of
    the data in memory, not the decoded table and its concatenation); other types in one read."""
    import pyarrow as pa

    types = {c: file.schema_arrow.field(c).type for c in wanted}
    if not all(pa.types.is_integer(t) or pa.types.is_floating(t) for t in types.values()):
        return file.read(columns=wanted)
    columns = {c: np.empty(file.metadata.num_rows, dtype=t.to_pandas_dtype()) for c, t in types.items()}
    start = 0
    for batch in file.iter_batches(batch_size=1 << 20, columns=wanted):
        for name in wanted:
            column = batch.column(name)
            if column.null_count:
                raise DataError(f"{path}: column {name!r} has missing values")
            columns[name][start : start + len(batch)] = column.to_numpy()
        start += len(batch)
    return pa.table(columns)


def _empty_strings(column) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return np.zeros(len(column), dtype=bool)
    return pc.equal(pc.utf8_length(column), 0).to_numpy(zero_copy_only=False)


def _ids(column):
    """Ids as a numpy array (numbers) or a pandas categorical (strings: one copy of each distinct id)."""
    import pyarrow as pa

    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return column.dictionary_encode().to_pandas()
    return column.to_numpy()


def _arrow_timestamps(column, path: Path) -> np.ndarray:
    """float64 timestamps; what pyarrow cannot cast goes through pandas, which names the bad row."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type) or pa.types.is_string(column.type):
        try:
            values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
        except pa.ArrowInvalid:
            values = None
        if values is not None and not np.isnan(values).any():
            return values
    return _numeric_timestamps(column.to_pandas(), path)


def _numeric_timestamps(column: pd.Series, path: Path) -> np.ndarray:
    values = pd.to_numeric(column, errors="coerce")
    if values.isna().any():
        first = int(np.argmax(values.isna().to_numpy()))
        raise DataError(f"{path}: row {first + 1}: timestamp {column.iloc[first]!r} is not a number")
    return values.to_numpy(dtype=np.float64)


def _delimiter_note(text: str) -> str:
    """', which looks separated by ";"' when `text` (one field) holds another common delimiter."""
    for delimiter in (",", ";", "\t", "|"):
        if delimiter in text:
            return f" (the line looks separated by {delimiter!r}; check `data.format`)"
    return ""


def _read_atomic(path: Path) -> pd.DataFrame:
    try:
        raw = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8 ({exc.reason})") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"cannot read {path} as a RecBole atomic file: {exc}") from None
    fields = {str(col).split(":")[0]: col for col in raw.columns}
    if "user_id" not in fields or "item_id" not in fields:
        raise DataError(
            f"{path}: an atomic .inter file needs `user_id:token` and `item_id:token` header fields; "
            f"found {list(raw.columns)}"
        )
    table = pd.DataFrame({"user": raw[fields["user_id"]].to_numpy(), "item": raw[fields["item_id"]].to_numpy()})
    if "timestamp" in fields:
        table["timestamp"] = _numeric_timestamps(raw[fields["timestamp"]], path)
    return table

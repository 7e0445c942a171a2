from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from compress.data.readers import detect_format, read_interactions
from compress.errors import DataError


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def test_pairs_keeps_file_order(tmp_path):
    path = write(tmp_path, "d.txt", "1 5\n1 3\n2 7\n2 5\n")
    table = read_interactions(path)
    assert table["user"].tolist() == [1, 1, 2, 2]
    assert table["item"].tolist() == [5, 3, 7, 5]


def test_user_lines(tmp_path):
    path = write(tmp_path, "d.txt", "1 4 5 6\n2 6 7\n")
    table = read_interactions(path)
    assert table["user"].tolist() == [1, 1, 1, 2, 2]
    assert table["item"].tolist() == [4, 5, 6, 6, 7]


def test_auto_detect(tmp_path):
    assert detect_format(write(tmp_path, "a.txt", "1 2\n1 3\n")) == "pairs"
    assert detect_format(write(tmp_path, "b.txt", "1 2 3\n2 3\n")) == "user_lines"
    assert detect_format(write(tmp_path, "c.csv", "u,i\n")) == "csv"
    assert detect_format(write(tmp_path, "d.inter", "x\n")) == "atomic"


def test_csv_with_named_columns_and_timestamps(tmp_path):
    path = write(tmp_path, "d.csv", "uid,iid,ts\na,x,3\na,y,1\nb,x,2\n")
    table = read_interactions(path, user_col="uid", item_col="iid", time_col="ts")
    assert table["user"].tolist() == ["a", "a", "b"]
    assert table["timestamp"].tolist() == [3.0, 1.0, 2.0]


def test_tsv_without_header_by_position(tmp_path):
    path = write(tmp_path, "u.data", "1\t10\t5\t100\n1\t11\t3\t50\n")
    table = read_interactions(path, "tsv", user_col="0", item_col="1", time_col="3", header=False)
    assert table["item"].tolist() == ["10", "11"]
    assert table["timestamp"].tolist() == [100.0, 50.0]


def test_parquet(tmp_path):
    path = tmp_path / "d.parquet"
    pd.DataFrame({"user_id": [1, 1, 2], "item_id": [3, 4, 3], "timestamp": [1, 2, 3]}).to_parquet(path)
    table = read_interactions(path)
    assert table["item"].tolist() == [3, 4, 3]
    assert "timestamp" in table


def test_recbole_atomic(tmp_path):
    path = write(tmp_path, "d.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t9\t4\t20\n1\t8\t5\t10\n")
    table = read_interactions(path)
    assert table["item"].tolist() == ["9", "8"]
    assert table["timestamp"].tolist() == [20.0, 10.0]


@pytest.mark.parametrize(
    "name, content, fmt, message",
    [
        ("e.txt", "", "auto", "empty"),
        ("m.txt", "1 2\n1 3 4\n", "pairs", "line 2: expected `user item`, got 3 fields"),
        ("n.txt", "1 2\n2 x\n", "pairs", "line 2: id 'x' is not an integer"),
        ("f.txt", "1 2\n2 2.5\n", "pairs", "line 2: id '2.5' is not an integer"),
        ("g.txt", "1 2\n-2 3\n", "pairs", "line 2: negative id -2"),
        ("u.txt", "1 2 3\n7\n", "user_lines", "line 2: a user with no items"),
        ("v.txt", "1 2 3\n2 3 y\n", "user_lines", "line 2: id 'y' is not an integer"),
        ("b.txt", b"1 2\n1 \xff\n", "pairs", "line 2 is not valid UTF-8"),
        ("c.csv", "a,b\n1,2\n", "csv", "column(s) ['user_id', 'item_id'] not found"),
        ("t.csv", "user_id,item_id,timestamp\n1,2,soon\n", "csv", "timestamp 'soon' is not a number"),
        ("a.inter", "foo\tbar\n1\t2\n", "atomic", "needs `user_id:token`"),
    ],
)
def test_bad_files_raise_clear_errors(tmp_path, name, content, fmt, message):
    path = write(tmp_path, name, content)
    with pytest.raises(DataError, match=None) as info:
        read_interactions(path, fmt)
    assert message in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_interactions(tmp_path / "nope.txt")


def test_undetectable_format(tmp_path):
    with pytest.raises(DataError, match="cannot detect"):
        read_interactions(write(tmp_path, "x.txt", "hello world again\n"))


def test_pairs_large_file_is_vectorised(tmp_path):
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(1, 2001), 50)
    items = rng.integers(1, 1000, size=len(users))
    path = tmp_path / "big.txt"
    path.write_text("".join(f"{u} {i}\n" for u, i in zip(users, items)))
    table = read_interactions(path)
    assert len(table) == 100_000
    assert table["item"].to_numpy().tolist() == items.tolist()

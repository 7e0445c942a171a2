"""Load time and peak memory of reading + preprocessing 1M, 10M and 50M synthetic interactions.

Writes synthetic interaction files into a scratch folder (default /tmp/compress-scale-data,
never the repository) as `pairs` text, csv (user_id,item_id,timestamp) and Parquet, then
times `compress.data.load_data` (read, k-core off, drop short users, sort by time, remap) in
a fresh process per file, with this checkout's code and, with --baseline, with another
checkout (e.g. the commit before the streaming readers) for comparison. Peak memory is the
process's peak RSS (VmHWM) minus its RSS after imports. Results:
benchmarks/results/scale/scale_data.{json,md}.

    python benchmarks/scale_data.py --baseline /tmp/compress-base
    python benchmarks/scale_data.py --sizes 1000000 --formats pairs
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from scaling import run_child, status_kib, write_results

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "scale"
SUFFIX = {"pairs": "txt", "csv": "csv", "parquet": "parquet"}


def generate(size: int, fmt: str, folder: Path) -> Path:
    """`size` interactions of size/50 users over 200k items, in time order (written once, then reused)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    path = folder / f"interactions_{size}.{SUFFIX[fmt]}"
    if path.exists():
        return path
    rng = np.random.default_rng(0)
    users = rng.integers(0, max(size // 50, 1), size=size, dtype=np.int64)
    items = rng.integers(1, 200_001, size=size, dtype=np.int64)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    if fmt == "pairs":
        table = pa.table({"user": users, "item": items})
        pacsv.write_csv(table, tmp, pacsv.WriteOptions(include_header=False, delimiter=" "))
    else:
        table = pa.table({"user_id": users, "item_id": items, "timestamp": np.arange(size, dtype=np.int64)})
        if fmt == "csv":
            pacsv.write_csv(table, tmp)
        else:
            pq.write_table(table, tmp)
    tmp.rename(path)
    return path


def measure(path: Path, fmt: str) -> dict:
    """Load one file in this process: seconds and peak RSS growth."""
    from compress.data import DataConfig, load_data

    before = status_kib("VmRSS")
    started = time.perf_counter()
    data = load_data(DataConfig(source="file", path=path, format=fmt), seed=0)
    seconds = time.perf_counter() - started
    return {
        "seconds": round(seconds, 2),
        "peak_rss_growth_mib": round((status_kib("VmHWM") - before) / 1024, 1),
        "result_mib": round((data.items.nbytes + data.offsets.nbytes) / 2**20, 1),
        "users": data.num_users, "items": data.num_items, "interactions": int(data.lengths.sum()),
        "fingerprint": data.fingerprint(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000, 50_000_000])
    parser.add_argument("--formats", nargs="+", default=["pairs", "csv", "parquet"], choices=sorted(SUFFIX))
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/compress-scale-data"))
    parser.add_argument("--baseline", type=Path, help="Another checkout to compare with (its folder holding compress/).")
    parser.add_argument("--baseline-csv-max", type=int, default=10_000_000,
                        help="Largest csv run with the baseline (its csv reader holds a Python string per field).")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--one", nargs=2, metavar=("PATH", "FORMAT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(Path(args.one[0]), args.one[1])))
        return

    rows = []
    for size in args.sizes:
        for fmt in args.formats:
            started = time.perf_counter()
            path = generate(size, fmt, args.scratch)
            print(f"{path} ({path.stat().st_size / 2**20:.0f} MiB, {time.perf_counter() - started:.0f}s)", flush=True)
            codes = [("this", REPO)]
            if args.baseline and (fmt != "csv" or size <= args.baseline_csv_max):
                codes.append(("baseline", args.baseline))
            for code, root in codes:
                env = {**os.environ, "PYTHONPATH": str(root)}
                measured = run_child([sys.executable, __file__, "--one", str(path), fmt], f"{code} {path}", env)
                if measured is None:
                    continue
                row = {"interactions": size, "format": fmt, "code": code,
                       "file_mib": round(path.stat().st_size / 2**20, 1), **measured}
                rows.append(row)
                print(json.dumps(row), flush=True)
    write_results(args.out, "scale_data", rows, markdown)


def markdown(rows: list[dict]) -> str:
    lines = [
        "# Loading interactions: read + preprocess (CPU)",
        "",
        "Synthetic interactions (users = interactions / 50, 200k items, time order); `load_data` reads the",
        "file and builds the remapped sequences. Peak memory: the process's peak RSS growth over its RSS",
        "after imports; `result` is the size of the finished sequences (int64 items + offsets).",
        "`this`: this checkout (pyarrow readers, preprocessing on int32 codes); `baseline`: the code before.",
        "",
        "| interactions | format | file MiB | code | seconds | peak memory growth (MiB) | result (MiB) | same data |",
        "|---:|---|---:|---|---:|---:|---:|---|",
    ]
    this = {(r["interactions"], r["format"]): r["fingerprint"] for r in rows if r["code"] == "this"}
    for r in rows:
        same = "yes" if this.get((r["interactions"], r["format"])) == r["fingerprint"] else "NO"
        lines.append(f"| {r['interactions']:,} | {r['format']} | {r['file_mib']:,.0f} | {r['code']} | "
                     f"{r['seconds']:.1f} | {r['peak_rss_growth_mib']:,.0f} | {r['result_mib']:,.0f} | {same} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

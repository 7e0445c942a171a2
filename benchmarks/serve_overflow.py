"""Quality of the `slide` overflow policy against `exact` on real histories past max_len (compress serve /events).

    python benchmarks/serve_overflow.py /work/scratchconv/served --data ../shared/datasets/ml-1m.txt \
        --users 300 --past 100 --out benchmarks/results/serve

Users with more than max_len events (in file order, `user item [timestamp]` lines with an optional header, as
the `pairs` format) are sampled; each one's events go through two event engines (compress.serve.events, the
in-process state store), one per policy, all sampled users' t-th events in one batch. `exact` answers every
event past max_len with the full pass over the last max_len events; `slide` overwrites the oldest cached
position. For each of a user's first `--past` events past max_len: whether slide's top-10 equals exact's
(same items, same order), and the share of exact's top-10 that slide also recommends. Written to
<out>/overflow_agreement.json, by events past max_len (1, 2-10, 11-50, 51-100, ...) and overall.
Torch-free; no timing (run it beside anything).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BUCKETS = ((1, 1), (2, 10), (11, 50), (51, 100), (101, 200), (201, 10**9))


def read_histories(path: Path) -> dict[str, list[str]]:
    histories: dict[str, list[str]] = defaultdict(list)
    with path.open() as lines:
        for number, line in enumerate(lines):
            fields = line.split()
            if len(fields) < 2 or (number == 0 and not fields[1].isdigit()):
                continue  # a header or a blank line
            histories[fields[0]].append(fields[1])
    return histories


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("artifact", help="a stage or onnx/ folder with step.onnx (or a run folder)")
    parser.add_argument("--data", type=Path, required=True, help="user item [timestamp] lines, in time order")
    parser.add_argument("--users", type=int, default=300, help="users sampled among those past max_len")
    parser.add_argument("--past", type=int, default=100, help="events past max_len compared per user, at most")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serve")
    args = parser.parse_args()

    from compress.serve.events import EventEngine
    from compress.serve.locate import resolve_artifact
    from compress.serve.requests import Event
    from compress.serve.state_store import MemoryStateStore

    folder = resolve_artifact(Path(args.artifact), need_step=True)
    engines = {policy: EventEngine(folder, MemoryStateStore(), overflow=policy, threads=args.threads)
               for policy in ("exact", "slide")}
    max_len, known = engines["exact"].max_len, engines["exact"].lookup
    histories = {u: [i for i in h if i in known] for u, h in read_histories(args.data).items()}
    long = sorted(u for u, h in histories.items() if len(h) > max_len)
    rng = np.random.default_rng(args.seed)
    users = sorted(rng.choice(long, min(args.users, len(long)), replace=False).tolist())
    streams = {u: histories[u][: max_len + args.past] for u in users}
    same: dict[int, list[bool]] = defaultdict(list)
    overlap: dict[int, list[float]] = defaultdict(list)
    for t in range(max(len(s) for s in streams.values())):
        wave = [Event(u, s[t]) for u, s in streams.items() if t < len(s)]
        exact, slide = (engines[p].apply(wave) for p in ("exact", "slide"))
        if t >= max_len:  # the (t - max_len + 1)-th event past max_len
            for a, b in zip(exact, slide):
                same[t - max_len + 1].append(a.items == b.items)
                overlap[t - max_len + 1].append(len(set(a.items) & set(b.items)) / len(a.items))
        print(f"event {t + 1}: {len(wave)} users", file=sys.stderr, end="\r")

    def summary(keys: list[int]) -> dict[str, float | int]:
        flat_same = [x for k in keys for x in same[k]]
        flat_overlap = [x for k in keys for x in overlap[k]]
        return {"events": len(flat_same), "same_top10": float(np.mean(flat_same)) if flat_same else None,
                "top10_overlap": float(np.mean(flat_overlap)) if flat_overlap else None}

    result = {
        "artifact": str(folder), "data": str(args.data), "max_len": max_len, "users": len(users),
        "users_past_max_len": len(long), "past": args.past, "seed": args.seed,
        "mean_history": float(np.mean([len(histories[u]) for u in users])),
        "overall": summary(sorted(same)),
        "by_events_past_max_len": {f"{lo}-{hi}" if hi < 10**9 else f"{lo}+": summary([k for k in same if lo <= k <= hi])
                                   for lo, hi in BUCKETS if any(lo <= k <= hi for k in same)},
        "counts": {p: dict(e.counts) for p, e in engines.items()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "overflow_agreement.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

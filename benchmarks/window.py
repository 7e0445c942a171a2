"""Time ONNX artifacts side by side against one PyTorch teacher, in one bench session.

Made for the serving-window results (`benchmarks/results/search_ml1m_window/`): the teacher exported
at several windows (`compress export <teacher model> --out <folder> --max-len N --exporter dynamo`)
and the search's students, all timed in the same interleaved rounds (`compress.bench.session.bench_interleaved`:
every round measures the teacher, then every artifact), so runtime, window and compression gains
can be told apart. Accuracy comes from each artifact's own metrics (`metrics.json` of
`compress export`, or the run's manifest); this script only times.

    python benchmarks/window.py --recipe recipes/ml1m.yaml --teacher <run>/01-train/model \
        --onnx teacher-onnx-200=<folder> --onnx teacher-onnx-100=<folder> --onnx pick=<run>/04-export/onnx \
        --out benchmarks/results/search_ml1m_window/window_bench.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from compress.bench.session import BenchSession, TEACHER_PREFIX, bench_interleaved
from compress.bench.results import headline
from compress.data import load_data
from compress.recipe import load_recipe
from compress.runs.files import write_json
from compress.runtime.environment import resolve_device, versions
from compress.handlers import OnnxArtifact, TorchArtifact


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, required=True, help="data and bench settings (its `bench:` block)")
    parser.add_argument("--teacher", type=Path, required=True, help="the PyTorch teacher's model folder")
    parser.add_argument("--onnx", action="append", required=True, metavar="NAME=FOLDER", help="an ONNX artifact folder")
    parser.add_argument("--out", type=Path, required=True, help="a JSON file")
    args = parser.parse_args()
    recipe = load_recipe(args.recipe)
    data = load_data(recipe.data, recipe.seed)
    session = BenchSession(recipe.bench, resolve_device("cpu"), data, recipe.data.max_len)
    artifacts = {name: OnnxArtifact(Path(folder)) for name, folder in (o.split("=", 1) for o in args.onnx)}
    results = bench_interleaved(session, artifacts, {name: "teacher" for name in artifacts},
                                {"teacher": TorchArtifact(args.teacher)}, max(1, recipe.bench.rounds))
    rows = {name: {**headline(result), "round_latency_p50_ms": result["round_latency_p50_ms"],
                   "ratios": result["ratios"]} for name, result in results.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, {"session": session.id, "environment": session.environment, "bench": session.settings,
                          "artifacts": {k: str(v.path) for k, v in artifacts.items()}, "teacher": str(args.teacher),
                          "results": rows, "versions": versions()})
    for name, row in rows.items():
        label = "teacher (PyTorch)" if name == TEACHER_PREFIX + "teacher" else name
        print(f"{label:28s} p50 {row['latency_p50_ms']:.3f} ms  p99 {row['latency_p99_ms']:.3f} ms  "
              f"{row['throughput_seq_per_s']:.0f} seq/s  p50 vs teacher {row['ratios'].get('latency_p50_ms', 1):.3f}x")


if __name__ == "__main__":
    main()

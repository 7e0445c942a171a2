"""Which onnxruntime int8 settings pay, at equal ranking, on trained models and real sequences.

For each `--model NAME=FOLDER` (a trained PyTorch model folder): export it to ONNX fp32 (dynamo exporter,
fused attention, as the export stage does), then quantize it with compress.export.quantize (the quantize
stage's code) in every variant: dynamic and static QDQ (MatMul/Gemm only, calibrated on real training
sequences as the stage does), per-tensor / per-channel weights, with and without `reduce_range`, and static
with uint8 activations (U8S8). Each graph is
- ranked against the fp32 graph on test users with the quantize stage's parity gate
  (compress.evaluation.parity: top-10 overlap, NDCG@10 drop; thresholds of the stage's default);
- timed under each onnxruntime session optimisation level (disabled, basic, extended, all), batch 1 at
  max_len (real test histories, one user per call) and batch 256, rounds interleaved.
Both wall-clock and CPU time per call (time.process_time: all of this process's threads) are recorded:
on a shared machine the CPU time is the steadier measure of the work a call costs.

    nice -n 10 python benchmarks/int8.py --data ../shared/datasets/ml-1m.txt \\
        --model ml1m-student=artifacts/ml1m/03-prune/model --out benchmarks/results/int8
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import onnx

from compress.bench.timing import PROCESS_CPU, time_calls
from compress.data import load_data
from compress.data.batching import history_and_target
from compress.data.config import DataConfig
from compress.evaluation.config import ParityConfig
from compress.evaluation.parity import ranking_parity
from compress.evaluation.scoring import onnx_scores
from compress.export.config import ExportSettings
from compress.export.onnx_export import export_onnx
from compress.export.quantize import quantize_onnx
from compress.models import load_model
from compress.models.flops import flops_per_sequence
from compress.runtime.environment import describe_device, versions
from compress.serve.onnx_model import MODEL_FILE, OnnxRecommender, import_onnxruntime
from compress.data.padding import left_pad
from compress.stages.config import QuantizeConfig
from compress.stages.quantize import calibration_feeds

LEVELS = {"disabled": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
          "all": "ORT_ENABLE_ALL"}
VARIANTS: dict[str, dict] = {
    "fp32": {},
    "dynamic, per-tensor": dict(mode="dynamic", per_channel=False, reduce_range=False),
    "dynamic, per-tensor, reduce_range": dict(mode="dynamic", per_channel=False, reduce_range=True),
    "dynamic, per-channel": dict(mode="dynamic", per_channel=True, reduce_range=False),
    "dynamic, per-channel, reduce_range": dict(mode="dynamic", per_channel=True, reduce_range=True),
    "static QDQ S8S8, per-tensor": dict(mode="static", per_channel=False, reduce_range=False),
    "static QDQ S8S8, per-tensor, reduce_range": dict(mode="static", per_channel=False, reduce_range=True),
    "static QDQ S8S8, per-channel": dict(mode="static", per_channel=True, reduce_range=False),
    "static QDQ S8S8, per-channel, reduce_range": dict(mode="static", per_channel=True, reduce_range=True),
    "static QDQ U8S8, per-channel": dict(mode="static", per_channel=True, reduce_range=False, activation_type="uint8"),
    "static QDQ U8S8, per-channel, reduce_range": dict(mode="static", per_channel=True, reduce_range=True,
                                                       activation_type="uint8"),
}


def build(model_folder: Path, folder: Path, data, calibration: list[dict], wanted: list[str]) -> dict[str, Path]:
    """Every variant's ONNX artifact folder: fp32 (the export stage's defaults) and the quantized ones."""
    model = load_model(model_folder)
    fp32 = folder / "fp32"
    export_onnx(model, fp32, ExportSettings(), list(range(1, data.num_items + 1)), {"model": str(model_folder)})
    graphs = {"fp32": fp32}
    for name, options in VARIANTS.items():
        if name == "fp32" or name not in wanted:
            continue
        out = folder / name.replace(" ", "_").replace(",", "")
        quantize_onnx(fp32, out, calibration=calibration if options["mode"] == "static" else None, **options)
        graphs[name] = out
    return graphs


def inputs(data, max_len: int, users: np.ndarray) -> dict[str, np.ndarray]:
    ids = left_pad([history_and_target(data, int(u), "test")[0][-max_len:] for u in users], max_len)
    return {"item_ids": ids, "attention_mask": (ids > 0).astype(np.int64)}


def median_ms(session, feeds: list[dict], warmup: int = 1) -> tuple[float, float]:
    """(median wall ms, median CPU ms) per call over `feeds[warmup:]` (compress.bench.timing.time_calls,
    CPU time by time.process_time: all of this process's threads)."""
    timings = time_calls(lambda feed: session.run(["top_ids"], feed), feeds, warmup, cpu_clock=PROCESS_CPU)
    return float(np.median(timings.wall_ms)), float(np.median(timings.cpu_ms))


def study(name: str, model_folder: Path, data, args) -> dict:
    ort = import_onnxruntime()
    config = load_model(model_folder).config
    max_len = config.max_len
    rng = np.random.default_rng(0)
    singles = [inputs(data, max_len, [u]) for u in rng.integers(0, data.num_users, args.calls + 1)]
    big = inputs(data, max_len, rng.integers(0, data.num_users, 256))
    calibration = calibration_feeds(data, max_len, QuantizeConfig().calibration_users, 0)
    parity = QuantizeConfig().parity.model_copy(update={"users": args.parity_users})
    with tempfile.TemporaryDirectory() as scratch:
        graphs = build(model_folder, Path(scratch), data, calibration, args.variants)
        reference = onnx_scores(OnnxRecommender(graphs["fp32"], "cpu"))
        rows = {}
        for variant, folder in graphs.items():
            report = ranking_parity(reference, onnx_scores(OnnxRecommender(folder, "cpu")), data, max_len, parity)
            rows[variant] = {"variant": variant, "parity": report,
                             "passes_gate": report["overlap@10"] >= parity.min_overlap
                             and report["ndcg_drop@10"] <= parity.max_ndcg_drop,
                             "bytes": (folder / MODEL_FILE).stat().st_size,
                             "ops": sorted({n.op_type for n in onnx.load(str(folder / MODEL_FILE)).graph.node}),
                             "timings": {level: {"b1": [], "b256": []} for level in args.levels}}
        for index in range(args.rounds):  # interleaved: each round times every graph at every level once
            print(f"{name}: round {index + 1}/{args.rounds}", flush=True)
            for variant, folder in graphs.items():
                for level in args.levels:  # one session at a time: each keeps a batch-256 memory arena
                    options = ort.SessionOptions()
                    options.intra_op_num_threads = args.threads
                    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[level])
                    session = ort.InferenceSession(str(folder / MODEL_FILE), options, providers=["CPUExecutionProvider"])
                    timing = rows[variant]["timings"][level]
                    timing["b1"].append(median_ms(session, singles))
                    timing["b256"].append(median_ms(session, [big] * (1 + args.big_calls)))
                    del session
    flops = flops_per_sequence(config)["total"]
    for row in rows.values():
        row["timings"] = {level: {"rounds": timing} for level, timing in row["timings"].items()}
    result = {"name": name, "model_folder": str(model_folder), "model": config.model_dump(), "flops_per_sequence": flops,
              "parity_thresholds": parity.model_dump(), "rows": list(rows.values())}
    return summarize(result)


def summarize(result: dict) -> dict:
    """Per graph and level, from the rounds' (wall ms, CPU ms) medians: the median over rounds (wall) and
    the best round (CPU: on a shared machine contention only ever adds CPU time, so the least is the work)."""
    flops = result["flops_per_sequence"]
    for row in result["rows"]:
        for level, timing in row["timings"].items():
            b1, b256 = np.asarray(timing["rounds"]["b1"]), np.asarray(timing["rounds"]["b256"])
            row["timings"][level] = {
                "p50_ms_batch1": float(np.median(b1[:, 0])), "cpu_ms_batch1": float(b1[:, 1].min()),
                "seq_per_s_batch256": 256_000 / float(np.median(b256[:, 0])),
                "cpu_ms_per_seq_batch256": float(b256[:, 1].min()) / 256,
                "gflops_cpu_batch1": flops / float(b1[:, 1].min()) / 1e6,
                "gflops_cpu_batch256": flops * 256 / float(b256[:, 1].min()) / 1e6,
                "rounds": timing["rounds"],
            }
    return result


def markdown(result: dict) -> list[str]:
    lines = [f"## {result['name']}: {result['model']['num_layers']} layers, hidden {result['model']['hidden_size']}, "
             f"MLP {result['model']['intermediate_size']}, max_len {result['model']['max_len']}, "
             f"{result['flops_per_sequence'] / 1e6:.1f} MFLOP/seq", "",
             "| graph | level | top-10 overlap | ΔNDCG@10 | gate | CPU ms b1 | CPU ms/seq b256 | "
             "GFLOP/s (CPU) b1, b256 | wall p50 ms b1 | wall seq/s b256 | KiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        p = row["parity"]
        for level, t in row["timings"].items():
            lines.append(
                f"| {row['variant']} | {level} | {p['overlap@10']:.3f} | {-p['ndcg_drop@10']:+.4f} | "
                f"{'pass' if row['passes_gate'] else 'FAIL'} | {t['cpu_ms_batch1']:.2f} | {t['cpu_ms_per_seq_batch256']:.3f} | "
                f"{t['gflops_cpu_batch1']:.1f}, {t['gflops_cpu_batch256']:.1f} | {t['p50_ms_batch1']:.2f} | "
                f"{t['seq_per_s_batch256']:,.0f} | {row['bytes'] / 1024:,.0f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the pairs file the models were trained on")
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--model", action="append", required=True, help="NAME=FOLDER of a trained model")
    parser.add_argument("--threads", type=int, default=1,
                        help="intra-op threads (1: CPU time is the work itself, no thread spin-waiting in it)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--calls", type=int, default=30, help="timed batch-1 calls per graph, level and round")
    parser.add_argument("--big-calls", type=int, default=3, help="timed batch-256 calls per graph, level and round")
    parser.add_argument("--parity-users", type=int, default=1024)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/int8"))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), metavar="VARIANT",
                        help="int8 variants to build (default: all); fp32 is always the reference")
    parser.add_argument("--levels", nargs="+", default=list(LEVELS), choices=list(LEVELS),
                        help="onnxruntime session optimisation levels to time (default: all four)")
    parser.add_argument("--merge", type=Path, action="append", default=[],
                        help="an earlier int8.json whose studies join this one's (e.g. one model per session)")
    args = parser.parse_args()
    data = load_data(DataConfig(source="file", path=args.data, format="pairs", max_len=args.max_len), 0)
    results = []
    for spec in args.model:
        name, folder = spec.split("=", 1)
        results.append(study(name, Path(folder), data, args))
    for earlier in args.merge:
        results = [summarize(r) for r in json.loads(earlier.read_text())["studies"]] + results
    args.out.mkdir(parents=True, exist_ok=True)
    environment = describe_device(__import__("torch").device("cpu"))
    payload = {"threads": args.threads, "rounds": args.rounds, "calls": args.calls, "big_calls": args.big_calls,
               "environment": environment, "versions": versions(), "studies": results}
    (args.out / "int8.json").write_text(json.dumps(payload, indent=2) + "\n")
    lines = ["# onnxruntime int8 variants at equal ranking", "",
             f"{environment.get('cpu')}, {args.threads} threads; medians over {args.rounds} interleaved rounds "
             f"({args.calls} batch-1 calls, {args.big_calls} batch-256 calls each); CPU ms = time.process_time, "
             "the best round's median; wall: the median over rounds", ""]
    for result in results:
        lines += markdown(result) + [""]
    (args.out / "int8.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

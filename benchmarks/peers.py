"""Peers and engines, speed side: a recipe's teacher shape and its stacked student with random weights, the
peers of compress/bench/peers.py on that teacher, and each ONNX graph in onnxruntime and in OpenVINO, all
timed in one bench session on real test histories. Random weights: the speed side only (the top-10 agreement
with the teacher is still measured; NDCG of random weights means nothing). The headline's own peers rows
come from `benchmarks/headline.py` (`--peers`, the default) on the trained teacher.

    python benchmarks/peers.py --recipe recipes/ml1m.yaml --out benchmarks/results/peers
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
from pathlib import Path

import torch

from compress.bench.peers import PeerInputs, bench_peers, build_peers, openvino_nncf_int8, peer_inputs, peer_versions
from compress.bench.session import BenchSession
from compress.data import load_data
from compress.export.config import ExportSettings
from compress.export.onnx_export import export_onnx
from compress.export.quantize import quantize_onnx
from compress.handlers import Artifact, OnnxArtifact, TorchArtifact
from compress.models import RecommenderConfig, SequentialRecommender, save_model
from compress.recipe import read_raw_recipe, validate_recipe
from compress.runtime.environment import resolve_device, versions

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from large_speed import recipe_student, stage  # noqa: E402  (the student shape the recipe's stages make)


def stack_artifacts(student: SequentialRecommender, teacher_onnx: Path, folder: Path, recipe,
                    calibration: list[dict]) -> dict[str, Artifact]:
    """The teacher's ONNX and the student's fp32 / onnxruntime int8 / NNCF int8 graphs, each in both engines."""
    settings = (stage(recipe, "export") or ExportSettings()).model_copy(update={"incremental": False})
    fp32, int8 = folder / "student-fp32", folder / "student-int8-ort"
    export_onnx(student, fp32, settings, list(range(1, student.config.num_items + 1)), {"speed_only": True})
    quantize_onnx(fp32, int8, "dynamic")
    graphs = {"teacher fp32": teacher_onnx, "student fp32": fp32, "student int8 (onnxruntime dynamic)": int8}
    if importlib.util.find_spec("nncf") is not None:  # the peers extra
        nncf = openvino_nncf_int8(PeerInputs(None, fp32, student.config, calibration), folder / "student-int8-nncf")
        graphs["student int8 (NNCF static QDQ)"] = nncf.path
    return {f"{name}, {engine}": OnnxArtifact(path, engine=engine)
            for name, path in graphs.items() for engine in ("onnxruntime", "openvino")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", type=Path, default=Path("recipes/ml1m.yaml"))
    parser.add_argument("-o", "--set", dest="overrides", action="append", default=[], help="recipe override key=value")
    parser.add_argument("--peer", action="append", default=None, help="only these peers (default: all)")
    parser.add_argument("--no-peers", action="store_true", help="the onnxruntime/OpenVINO grid only")
    parser.add_argument("--no-engines", action="store_true", help="the peers only, no onnxruntime/OpenVINO grid")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "peers")
    args = parser.parse_args()
    recipe = validate_recipe(read_raw_recipe(args.recipe, args.overrides), str(args.recipe))
    data = load_data(recipe.data, recipe.seed)
    teacher_shape = RecommenderConfig(**stage(recipe, "train").model.model_dump(), num_items=data.num_items,
                                      max_len=recipe.data.max_len)
    torch.manual_seed(recipe.seed)
    session = BenchSession(recipe.bench, resolve_device("cpu"), data, recipe.data.max_len)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        save_model(SequentialRecommender(teacher_shape).eval(), root / "teacher")
        teacher = TorchArtifact(root / "teacher")
        inputs = peer_inputs(teacher, data, root / "peers", recipe.seed, stage(recipe, "export"))
        peers, skipped = ({}, {}) if args.no_peers else build_peers(inputs, root / "peers", args.peer)
        teacher_ranks = teacher.ranks(data, recipe.eval, session.device)
        stack = {}
        if not args.no_engines:
            student = SequentialRecommender(recipe_student(teacher_shape, recipe)).eval()
            stack = stack_artifacts(student, inputs.teacher_onnx, root / "stack", recipe, inputs.calibration)
        rows, failed = bench_peers(session, {**peers, **stack}, teacher, data, recipe.eval, teacher_ranks)
        skipped.update(failed)
    peer_rows = [row for row in rows if row["name"] in peers]
    write(args.out, recipe, session, peer_rows, [row for row in rows if row["name"] in stack], skipped, data)
    return 0


def write(out: Path, recipe, session: BenchSession, peers: list[dict], engines: list[dict], skipped: dict[str, str],
          data) -> None:
    """peers.json (every row with its bench result) and peers.md (the tables, and who wins each cell)."""
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "what": "SPEED SIDE: random weights on the recipe's teacher shape (not the headline session)",
        "recipe": recipe.name, "max_len": recipe.data.max_len, "users": int(data.num_users), "bench": session.settings,
        "session": session.id, "environment": session.environment, "versions": {**versions(), **peer_versions()},
        "peers": peers, "engines": engines, "skipped": skipped,
    }
    (out / "peers.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    lines = [*([table("peers of the teacher", peers), ""] if peers else []),
             *([table("engines: the same ONNX graphs in onnxruntime and OpenVINO", engines), ""] if engines else [])]
    lines += [f"- skipped {name}: {why}" for name, why in skipped.items()]
    if peers and engines:
        lines += ["", *winners(peers, engines)]
    (out / "peers.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


STACK = "student int8 (onnxruntime dynamic), onnxruntime"  # the recipe's deployable artifact, as shipped


def winners(peers: list[dict], engines: list[dict]) -> list[str]:
    """Per cell (batch-1 p50, batch-256 seq/s): the fastest peer, the fastest stack row, and the stack as shipped."""
    lines = []
    for key, label, best in (("latency_p50_ms", "batch-1 p50 (ms)", min), ("throughput_seq_per_s", "batch-256 seq/s", max)):
        peer = best(peers, key=lambda r: r["values"][key])
        ours = best(engines, key=lambda r: r["values"][key])
        shipped = next((r for r in engines if r["name"] == STACK), None)
        lines.append(f"- {label}: best peer {peer['name']} {peer['values'][key]:,.2f}; best stack row {ours['name']} "
                     f"{ours['values'][key]:,.2f}" + (f"; as shipped ({STACK}) {shipped['values'][key]:,.2f}"
                                                       if shipped else ""))
    return lines


def table(title: str, rows: list[dict]) -> str:
    head = [f"### {title}", "",
            "| row | engine | p50 ms b1 (teacher same rounds) | seq/s b256 (teacher same rounds) | size MB | "
            "ΔNDCG@10 vs teacher [95% CI] | CPU ms b1 |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        v, ref, cpu, d = r["values"], r["bench"]["reference"], r["bench"]["cpu_time"], r["difference"]
        head.append(
            f"| {r['name']} | {r['engine']} | {v['latency_p50_ms']:.2f} ({ref['latency_p50_ms']:.2f}) | "
            f"{v['throughput_seq_per_s']:,.0f} ({ref['throughput_seq_per_s']:,.0f}) | {v['size_bytes'] / 1e6:.2f} | "
            f"{d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}] | {cpu['latency_p50_ms']:.2f} |")
    return "\n".join(head)


if __name__ == "__main__":
    sys.exit(main())

"""Speed only (no accuracy): a recipe's fp32 PyTorch teacher vs its stacked int8 ONNX student, with random weights.

Speed does not depend on the weights, so this measures what a recipe's shapes buy before its (GPU-sized)
training has run: the teacher's shape from the recipe's train stage, the student's from its distill and
prune stages (`plan_pruning`, as the prune stage computes it), plus `--student` alternatives
(`layers,heads,kv_heads,mlp`). Every model is built with random weights, exported with the recipe's export
settings and quantized with its quantize settings (static modes calibrate on real training sequences);
then one BenchSession (compress/bench/session.py) times them all on real test histories, rounds interleaved, the
teacher in PyTorch fp32 and in ONNX fp32 (the `teacher-onnx` control) first in every round.

    python benchmarks/large_speed.py --recipe recipes/ml1m_large.yaml -o data.path=../shared/datasets/ml-1m.txt \\
        --student 2,8,2,768 --student 1,4,1,512 --out benchmarks/results/ml1m_large
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from compress.bench.results import headline
from compress.bench.session import BenchSession, TEACHER_PREFIX, bench_interleaved
from compress.data import load_data
from compress.export.onnx_export import export_onnx
from compress.export.quantize import quantize_onnx
from compress.methods.pruning import plan_pruning
from compress.models import RecommenderConfig, SequentialRecommender, save_model
from compress.recipe import read_raw_recipe, validate_recipe
from compress.runtime.environment import resolve_device, versions
from compress.handlers import OnnxArtifact, TorchArtifact
from compress.stages.quantize import calibration_feeds

TEACHER, TEACHER_ONNX = "teacher", "teacher-onnx"


def stage(recipe, name: str):
    return next((s for s in recipe.stages if s.stage == name), None)


def recipe_student(teacher: RecommenderConfig, recipe) -> RecommenderConfig:
    """The student shape the recipe's distill and prune stages make of the teacher."""
    config = teacher
    if (distill := stage(recipe, "distill")) is not None:
        config = RecommenderConfig.model_validate({**config.model_dump(), "num_layers": distill.num_layers})
    if (prune := stage(recipe, "prune")) is not None:
        config = plan_pruning(prune, config).apply_to(config)
    return config


def alternative(teacher: RecommenderConfig, spec: str) -> RecommenderConfig:
    layers, heads, kv_heads, mlp = (int(x) for x in spec.split(","))
    return RecommenderConfig.model_validate({**teacher.model_dump(), "num_layers": layers, "num_heads": heads,
                                             "num_kv_heads": kv_heads, "intermediate_size": mlp})


def label(config: RecommenderConfig) -> str:
    return (f"{config.num_layers}L h{config.hidden_size} q{config.num_heads}/kv{config.num_kv_heads} "
            f"mlp{config.intermediate_size}")


def onnx_artifacts(model: SequentialRecommender, folder: Path, recipe, calibration: list[dict]) -> tuple[Path, Path]:
    """(fp32 ONNX folder, int8 ONNX folder) of `model`, with the recipe's export and quantize settings."""
    export, quantize = stage(recipe, "export"), stage(recipe, "quantize")
    fp32, int8 = folder / "onnx", folder / "int8"
    export_onnx(model, fp32, export, list(range(1, model.config.num_items + 1)), {"speed_only": True})
    quantize_onnx(fp32, int8, quantize.mode, quantize.op_types, quantize.per_channel, quantize.reduce_range,
                  quantize.item_table, calibration if quantize.mode == "static" else None, quantize.calibrate_method)
    return fp32, int8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=Path("recipes/ml1m_large.yaml"))
    parser.add_argument("-o", "--set", dest="overrides", action="append", default=[], help="recipe override key=value")
    parser.add_argument("--student", action="append", default=[], help="another student: layers,heads,kv_heads,mlp")
    parser.add_argument("--fp32-students", action="store_true", help="also time each student's fp32 ONNX graph")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ml1m_large"))
    args = parser.parse_args()
    recipe = validate_recipe(read_raw_recipe(args.recipe, args.overrides), str(args.recipe))
    data = load_data(recipe.data, recipe.seed)
    teacher_config = RecommenderConfig(**stage(recipe, "train").model.model_dump(), num_items=data.num_items,
                                       max_len=recipe.data.max_len)
    students = {"recipe student": recipe_student(teacher_config, recipe)}
    students.update({f"alternative {spec}": alternative(teacher_config, spec) for spec in args.student})
    calibration = calibration_feeds(data, recipe.data.max_len, stage(recipe, "quantize").calibration_users, recipe.seed)
    torch.manual_seed(recipe.seed)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        teacher_model = SequentialRecommender(teacher_config).eval()
        save_model(teacher_model, root / "teacher")
        teacher_onnx, _ = onnx_artifacts(teacher_model, root / "teacher", recipe, calibration)
        teachers = {TEACHER: TorchArtifact(root / "teacher"), TEACHER_ONNX: OnnxArtifact(teacher_onnx)}
        artifacts, shapes = {}, {TEACHER: teacher_config}
        for name, config in students.items():
            fp32, int8 = onnx_artifacts(SequentialRecommender(config).eval(), root / name.replace(" ", "_"), recipe,
                                        calibration)
            artifacts[f"{name}: int8 ONNX"] = OnnxArtifact(int8)
            if args.fp32_students:
                artifacts[f"{name}: fp32 ONNX"] = OnnxArtifact(fp32)
            shapes[name] = config
        session = BenchSession(recipe.bench, resolve_device("cpu"), data, recipe.data.max_len)
        results = bench_interleaved(session, artifacts, {name: TEACHER for name in artifacts}, teachers,
                                    recipe.bench.rounds)
    teacher, onnx_teacher = results[TEACHER_PREFIX + TEACHER], results[TEACHER_PREFIX + TEACHER_ONNX]
    rows = [row(TEACHER, teacher_config, teacher, teacher, None), row(TEACHER_ONNX, teacher_config, onnx_teacher, teacher, None)]
    rows += [row(name, shapes[name.split(":")[0]], result, teacher, onnx_teacher)
             for name, result in results.items() if not name.startswith(TEACHER_PREFIX)]
    write(args.out, recipe, session, rows)


def row(name: str, config: RecommenderConfig, result: dict, teacher: dict, onnx_teacher: dict | None) -> dict:
    """One model's numbers; speed-ups in wall time (median of per-round ratios, as the bench session
    computes them) and in CPU time (quotients of the medians: CPU ms of a batch-1 call, CPU ms per sequence
    at batch 256)."""
    numbers, cpu, teacher_cpu = headline(result), result["cpu_time"], teacher["cpu_time"]
    versus_onnx = None
    if onnx_teacher is not None:
        reference = headline(onnx_teacher)
        versus_onnx = {"batch1": reference["latency_p50_ms"] / numbers["latency_p50_ms"],
                       "batch256": numbers["throughput_seq_per_s"] / reference["throughput_seq_per_s"]}
    return {
        "name": name, "shape": label(config), "model": config.model_dump(), "engine": result["engine"],
        "params": result["params"], "size_bytes": result["size_bytes"],
        "flops_per_sequence": result["flops_per_sequence"],
        "p50_ms_batch1": numbers["latency_p50_ms"], "round_p50_ms": result["round_latency_p50_ms"],
        "seq_per_s_batch256": numbers["throughput_seq_per_s"],
        "cpu_ms_batch1": cpu["latency_p50_ms"], "cpu_ms_per_seq_batch256": cpu["ms_per_sequence"],
        "gflops_batch1": numbers["gflops_batch1"], "gflops_batch256": numbers["gflops_throughput"],
        "speedup_wall": wall_speedup(result, teacher),
        "speedup_cpu": {"batch1": teacher_cpu["latency_p50_ms"] / cpu["latency_p50_ms"],
                        "batch256": teacher_cpu["ms_per_sequence"] / cpu["ms_per_sequence"]},
        "speedup_wall_vs_onnx_teacher": versus_onnx,
    }


def wall_speedup(result: dict, teacher: dict) -> dict[str, float]:
    """vs the PyTorch teacher: the median of per-round ratios (each round's teacher measured just before);
    a teacher's own result holds ratios to itself, so for the ONNX teacher the quotient of medians."""
    if result["ratios"]["params"] == 1.0 and result is not teacher:  # the teacher-onnx control
        a, b = headline(result), headline(teacher)
        return {"batch1": b["latency_p50_ms"] / a["latency_p50_ms"],
                "batch256": a["throughput_seq_per_s"] / b["throughput_seq_per_s"]}
    return {"batch1": 1 / result["ratios"]["latency_p50_ms"], "batch256": result["ratios"]["throughput_seq_per_s"]}


def write(out: Path, recipe, session: BenchSession, rows: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "what": "SPEED ONLY: random weights, no accuracy (pending the training of the recipe's teacher)",
        "recipe": recipe.name, "max_len": recipe.data.max_len, "bench": session.settings,
        "session": session.id, "environment": session.environment, "versions": versions(), "rows": rows,
    }
    (out / "speed_only.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"# speed only, {recipe.name}: batch-1 p50 at max_len {recipe.data.max_len}, batch-256 throughput\n")
    lines = ["| model | shape | engine | params | GFLOP/seq | p50 ms b1 (CPU ms) | seq/s b256 (CPU ms/seq) | "
             "GFLOP/s b1, b256 | speed-up b1: wall, CPU | speed-up b256: wall, CPU |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        wall, cpu = r["speedup_wall"], r["speedup_cpu"]
        lines.append(
            f"| {r['name']} | {r['shape']} | {r['engine']} | {r['params']:,} | {r['flops_per_sequence']['total'] / 1e9:.3f} | "
            f"{r['p50_ms_batch1']:.2f} ({r['cpu_ms_batch1']:.2f}) | {r['seq_per_s_batch256']:,.0f} "
            f"({r['cpu_ms_per_seq_batch256']:.3f}) | {r['gflops_batch1']:.1f}, {r['gflops_batch256']:.1f} | "
            f"{wall['batch1']:.1f}x, {cpu['batch1']:.1f}x | {wall['batch256']:.1f}x, {cpu['batch256']:.1f}x |")
    (out / "speed_only.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

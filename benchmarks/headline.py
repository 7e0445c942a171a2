"""Reproduce the headline table: every stage of a recipe (teacher, distilled, pruned, int8 ONNX, ...
as far as the recipe goes) on a real dataset, benchmarked in one process, reported as JSON +
Markdown + PNG under benchmarks/results/<name>/ (no weights: runs go to benchmarks/runs/).

    python benchmarks/headline.py --recipe recipes/ml1m.yaml
    python benchmarks/headline.py --recipe recipes/beauty.yaml --data ../shared/datasets/Beauty.txt

The pipeline runs with bench off; then `bench_run` measures all stages in one session, so every
ratio to the teacher comes from numbers taken in this same process.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from compress.runs.artifacts import read_json, write_json
from compress.bench import bench_run
from compress.pipeline import RunOptions, run_recipe
from compress.recipe import read_raw_recipe, validate_recipe
from compress.report import build_report

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", type=Path, default=Path("recipes/ml1m.yaml"), help="recipe YAML")
    parser.add_argument("--data", type=Path, default=None, help="data file (sets data.source=file, data.path)")
    parser.add_argument("--name", default=None, help="results folder name (default: the recipe's name)")
    parser.add_argument("--device", default="auto", help="bench device: auto | cpu | cuda")
    parser.add_argument("-o", "--set", dest="overrides", action="append", default=[], help="recipe override key=value")
    parser.add_argument("--results", type=Path, default=HERE / "results", help="where results are written")
    parser.add_argument(
        "--runs", type=Path, default=HERE / "runs",
        help="where run folders go (a folder holding earlier runs of the same stages reuses them)",
    )
    args = parser.parse_args()

    overrides = list(args.overrides)
    if args.data is not None:
        overrides += ["data.source=file", f"data.path={args.data}"]
    raw = read_raw_recipe(args.recipe, overrides)
    name = args.name or raw["name"]
    raw.update(name=name, output_dir=str(args.runs))
    raw.setdefault("bench", {})["enabled"] = False  # measured below, all stages in one session
    recipe = validate_recipe(raw, str(args.recipe))

    run_recipe(recipe, RunOptions(show_progress=False))
    run_dir = recipe.output_dir / recipe.name
    bench_config = recipe.bench.model_copy(update={"enabled": True})
    manifest = bench_run(run_dir, bench_config, args.device)

    out = args.results / name
    report = build_report([run_dir], out, title=f"headline: {name}")
    report.html.unlink()  # results hold Markdown + PNG + JSON only
    write_json(out / "headline.json", {
        "name": name,
        "recipe": manifest["recipe"],
        "data": manifest["data"],
        "environment": manifest["environment"],
        "versions": manifest["versions"],
        "baseline": manifest["baseline"],
        "stages": read_json(report.json)["runs"][0]["stages"],
    })
    report.json.unlink()
    print(f"results: {out}")
    for path in sorted(out.iterdir()):
        print(f"  {path.name}  ({path.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

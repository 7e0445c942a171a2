"""Reproduce the headline table: every stage of a recipe (teacher, distilled, pruned, int8 ONNX, ...
as far as the recipe goes) on a real dataset, with its control rows and seeds, benchmarked in one
process, reported as JSON + Markdown + PNG under benchmarks/results/<name>/ (no weights: runs go
to benchmarks/runs/).

    python benchmarks/headline.py --recipe recipes/ml1m.yaml
    python benchmarks/headline.py --recipe recipes/beauty.yaml --data ../shared/datasets/Beauty.txt
    python benchmarks/headline.py --recipe recipes/studies/beauty_distill.yaml --data ../shared/datasets/Beauty.txt
    python benchmarks/headline.py --recipe recipes/ml1m.yaml --seeds 1 --no-controls   # the bare table
    python benchmarks/headline.py --recipe recipes/ml1m_large.yaml --teacher ../compress-teacher/artifacts/ml1m_large/01-train/model

Controls (compress/studies/controls.py), each a derived recipe run into a sibling run folder (the teacher
is reused through the stage cache): `teacher-onnx` (the teacher exported to ONNX fp32) and
`scratch` (the final student's shape trained from scratch with cross-entropy alone for the
student's distill + prune-recovery epochs, `--scratch-epochs` for more, then the same export and
quantize stages; for a recipe that compresses only the item table, the teacher's train stage at the
widest width whose float model fits in the final artifact), and `scratch-converged` (the same scratch
recipe with a large epoch cap, max(4x the student's epochs, 40) or `--converged-epochs`, ended by early
stopping; its epochs run and training seconds are recorded beside the student's: does the stack buy
accuracy, or training time? `--no-scratch-converged` leaves it out). `--seeds N` reruns the student
stages (and scratch) under N training seeds with the teacher fixed: quality is mean ± std over them.
The pipeline runs with bench off; then one BenchSession measures all stages and every control, so
every ratio to the teacher comes from numbers taken in this same process (the report prints the
teacher's numbers of each row's own rounds beside its ratios). Finally every stage and control is
ranked on the test users: NDCG@10 minus the teacher's, with a 95% paired-bootstrap interval.
With `--peers` (the default) the tools a user would pick instead (compress/bench/peers.py: torch.compile,
onnxruntime's transformer optimizer, OpenVINO fp32 and NNCF int8, torchao int8, Olive) are applied to the
teacher, ranked on the same test users and timed in the same bench session: `headline.json`'s "peers"; a peer
whose package is missing (`pip install 'compress[peers]'`) is skipped with its reason.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from compress.bench.peers import run_peers
from compress.bench.runs import bench_stages, teacher_of
from compress.bench.session import BenchSession
from compress.studies.controls import paired_differences, run_controls, write_controls
from compress.data import load_data
from compress.errors import CompressError
from compress.pipeline import RunOptions, run_recipe
from compress.recipe import read_raw_recipe, validate_recipe, with_loaded_teacher
from compress.report import build_report
from compress.report.collect import CONTROLS_FILE, PEERS_FILE
from compress.runs.files import read_json, write_json
from compress.runtime.environment import resolve_device

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", type=Path, default=Path("recipes/ml1m.yaml"), help="recipe YAML")
    parser.add_argument("--data", type=Path, default=None, help="data file (sets data.source=file, data.path)")
    parser.add_argument("--name", default=None, help="results folder name (default: the recipe's name)")
    parser.add_argument("--device", default="auto", help="bench device: auto | cpu | cuda")
    parser.add_argument("-o", "--set", dest="overrides", action="append", default=[], help="recipe override key=value")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds of the student rows and scratch (teacher fixed)")
    parser.add_argument("--scratch-epochs", type=int, default=None,
                        help="epochs of the scratch control (default and minimum: the student's distill + recovery epochs)")
    parser.add_argument("--converged-epochs", type=int, default=None,
                        help="epoch cap of scratch-converged (default: max(4 x the student's epochs, 40))")
    parser.add_argument("--no-scratch-converged", action="store_true",
                        help="leave out the scratch control trained to convergence")
    parser.add_argument("--no-controls", action="store_true", help="no scratch / teacher-onnx rows, no seeds, no intervals")
    parser.add_argument("--peers", action=argparse.BooleanOptionalAction, default=True,
                        help="time the peers (torch.compile, onnxruntime's optimizer, OpenVINO + NNCF, torchao, Olive) "
                        "on the teacher in the same bench session; a missing peer is skipped with its reason")
    parser.add_argument("--teacher", type=Path, default=None,
                        help="a trained teacher's model folder: replaces the recipe's train stage with a `load` of it "
                        "(a long training run from a pinned worktree, docs/reliability.md)")
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
    if args.teacher is not None:
        raw = with_loaded_teacher(raw, args.teacher)
    name = args.name or raw["name"]
    raw.update(name=name, output_dir=str(args.runs))
    raw.setdefault("bench", {})["enabled"] = False  # measured below, all stages in one session
    recipe = validate_recipe(raw, str(args.recipe))

    options = RunOptions(show_progress=False)
    run_dir = recipe.output_dir / recipe.name
    if args.no_controls:
        run_recipe(recipe, options)
        (run_dir / CONTROLS_FILE).unlink(missing_ok=True)  # an earlier run's controls would not match
        controls = None
    else:
        controls = run_controls(
            recipe, options, args.seeds, args.scratch_epochs,
            converged=not args.no_scratch_converged, converged_epochs=args.converged_epochs,
        )

    device = resolve_device(args.device)
    bench_config = recipe.bench.model_copy(update={"enabled": True})
    data = load_data(recipe.data, recipe.seed)
    session = BenchSession(bench_config, device, data, recipe.data.max_len)
    manifest = bench_stages(session, run_dir)
    if controls is not None:
        teacher = teacher_of(run_dir, manifest)
        for folder in filter(None, [controls.teacher_onnx, controls.scratch.get(recipe.seed), controls.converged]):
            bench_stages(session, folder, teacher, last_only=True)  # same session, ratios to this teacher
        write_controls(controls, paired_differences(controls, device))
    if args.peers:
        export = next((stage for stage in recipe.stages if stage.stage == "export"), None)  # its ExportSettings
        run_peers(session, run_dir, teacher_of(run_dir, manifest), data, recipe.eval, recipe.seed, export)
    else:
        (run_dir / PEERS_FILE).unlink(missing_ok=True)  # an earlier run's peers would not be of this session

    out = args.results / name
    report = build_report([run_dir], out, title=f"headline: {name}")
    report.html.unlink()  # results hold Markdown + PNG + JSON only
    written = read_json(report.json)["runs"][0]
    write_json(out / "headline.json", {
        "name": name,
        "recipe": manifest["recipe"],
        "data": manifest["data"],
        "environment": manifest["environment"],
        "versions": {**manifest["versions"], **written.get("peer_versions", {})},
        "baseline": manifest["baseline"],
        "stages": written["stages"],
        **({} if controls is None else {
            "controls": [control_entry(row) for row in written["controls"]],
            "seeds": written.get("seeds"),
            "paired": written.get("paired"),
            "skipped": written.get("skipped", {}),
            "training": written.get("training", {}),
        }),
        **({"peers": [control_entry(row) for row in written["peers"]], "peers_skipped": written["peers_skipped"]}
           if "peers" in written else {}),
    })
    report.json.unlink()
    print(f"results: {out}")
    for path in sorted(out.iterdir()):
        print(f"  {path.name}  ({path.stat().st_size:,} bytes)")
    return 0


def control_entry(row: dict) -> dict:
    """A control as headline.json holds it: its name first, then the keys of a stage entry."""
    return {"name": row["name"], **{k: v for k, v in row.items() if k != "name"}}


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CompressError as exc:  # a user mistake (recipe, option, data): one message, exit 2
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)

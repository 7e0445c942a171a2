"""The `compress` command line: parse, call the library, print. User mistakes exit 2, no traceback."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from compress.runs.files import human_bytes
from compress.errors import CompressError, RecipeError

if TYPE_CHECKING:
    from compress.data.sequences import SequenceData
    from compress.recipe import Recipe

app = typer.Typer(
    help="Turn an LLM-backbone sequential recommender into small, fast, deployable students.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
errors = Console(stderr=True)
DEBUG_ENV = "COMPRESS_DEBUG"
INTERRUPTED = 130
ModelT = TypeVar("ModelT")

def _stage_exporter() -> str:
    """The export stage's default exporter (compress/export/config.py is pydantic only: no torch here)."""
    from compress.export.config import ExportSettings

    return str(ExportSettings.model_fields["exporter"].default)


DEFAULT_EXPORTER = _stage_exporter()  # `compress export` exports as the `export` stage does


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("compress")
    except Exception:  # not installed (run from a checkout): the package's own
        from compress import __version__

        return __version__


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"compress {_version()}")
        raise typer.Exit()


@app.callback()
def _global(
    debug: bool = typer.Option(False, "--debug/--no-debug", help="Show full tracebacks on errors."),
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    if debug:
        os.environ[DEBUG_ENV] = "1"


def _flags_without_type() -> None:
    """On/off flags render as `--force  --no-force`, not `--force <bool>` (typer >= 0.2x shows every option's
    type in the rich help, flags included)."""
    from typer.core import TyperOption

    shown = getattr(TyperOption, "display_type_rich", None)
    if shown is None or getattr(shown, "_compress_patched", False):
        return

    def display_type_rich(self: Any, ctx: Any) -> Any:
        return None if self.is_flag and not self.count else shown(self, ctx)

    display_type_rich._compress_patched = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_without_type()


def _debug() -> bool:
    return bool(os.environ.get(DEBUG_ENV))


@app.command()
def run(
    recipe: Path = typer.Argument(
        ..., help="Recipe YAML file, e.g. recipes/quickstart.yaml; its `data:` section names the data (see below)."
    ),
    override: Optional[list[str]] = typer.Option(
        None, "-o", "--set", help="Override a recipe value: key.path=value (repeatable)."
    ),
    force: bool = typer.Option(False, "--force/--no-force", help="Rerun every stage, ignoring cached results."),
    quiet: bool = typer.Option(False, "--quiet/--no-quiet", "-q", help="No progress bars."),
    nproc: int = typer.Option(
        1, "--nproc", min=1, help="Train data parallel in N processes on this machine (torchrun; one per GPU)."
    ),
) -> None:
    """Run the pipeline a recipe describes; finished stages with unchanged inputs are reused.

    Data is set in the recipe's `data:` section, or on the command line: -o data.path=FILE (a path alone
    means source: file). Accepted formats (data.format, default auto): {formats}.

    Examples:

      compress run recipes/quickstart.yaml

      compress run recipes/quickstart.yaml -o data.source=file -o data.path=my.csv

      compress run recipes/ml1m.yaml -o data.path=../shared/datasets/ml-1m.txt -o stages.train.epochs=5

      compress run recipes/quickstart.yaml --nproc 8

      torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 -m compress run recipe.yaml
    """
    from compress.recipe import load_recipe
    from compress.runtime.launch import launched, relaunch, without_option

    # Recipe and data mistakes are one message here, before torch is imported (and not one per process).
    loaded = load_recipe(recipe, override or [])
    if nproc > 1 and not launched():
        raise typer.Exit(relaunch(without_option(sys.argv[1:], "--nproc"), nproc))
    from compress.data.loading import load_data
    from compress.runs.failures import resource_errors

    with resource_errors(f"run {loaded.name}", loaded.output_dir / loaded.name):
        data = load_data(loaded.data, loaded.seed)
    from compress.runtime import distributed

    try:
        _run(loaded, data, force, quiet)
    finally:
        distributed.shutdown()


def _run(loaded: Recipe, data: SequenceData, force: bool, quiet: bool) -> None:
    from compress.runtime import distributed
    from compress.pipeline import RunOptions, run_recipe

    options = RunOptions(force=force, show_progress=not quiet, log=console.print, show_warnings=_debug())
    manifest = run_recipe(loaded, options, data)
    if not distributed.is_main():
        return
    run_dir = loaded.output_dir / loaded.name
    console.print(metrics_table(manifest, run_dir))
    _warn_small_data(manifest)
    console.print(f"run folder: {run_dir}  ({manifest['seconds']:.1f}s)")
    if loaded.report:
        from compress.report import build_report

        files = build_report([run_dir], run_dir / "report")
        console.print(f"report: {files.markdown}\n        {files.html}")


@app.command()
def bench(
    run_dir: Path = typer.Argument(..., help="A run folder written by `compress run`, e.g. artifacts/quickstart."),
    device: str = typer.Option("auto", help="auto | cpu | cuda (auto: CUDA when present)."),
    warmup: Optional[int] = typer.Option(None, help="Untimed calls first (default: the recipe's bench.warmup)."),
    iterations: Optional[int] = typer.Option(None, help="Timed batch-1 calls (default: the recipe's)."),
    batch_size: Optional[int] = typer.Option(None, help="Throughput batch size (default: the recipe's)."),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads (default: the recipe's, else torch's)."),
    rounds: Optional[int] = typer.Option(
        None, help="Rounds of (teacher, stage) per stage; medians over rounds (default: the recipe's)."
    ),
) -> None:
    """Re-measure every stage of a run in this one process: latency, throughput, memory, ratios to the teacher.

    Writes bench.json beside each stage's metrics.json and updates the manifest.

    Examples:

      compress bench artifacts/quickstart

      compress bench artifacts/ml1m --iterations 200 --threads 1 --rounds 3
    """
    from compress.bench.config import BenchConfig
    from compress.bench.runs import bench_run
    from compress.runs.locking import run_lock
    from compress.runs.layout import read_manifest
    from compress.runtime.environment import resolve_device

    given = {"warmup": warmup, "iterations": iterations, "batch_size_throughput": batch_size, "threads": threads,
             "rounds": rounds}
    given = {key: value for key, value in given.items() if value is not None}
    flags = {"warmup": "--warmup", "iterations": "--iterations", "batch_size_throughput": "--batch-size",
             "threads": "--threads", "rounds": "--rounds"}
    validate_options("bench", BenchConfig, given, flags)  # option mistakes first, before the run folder is read
    resolve_device(device)
    config = BenchConfig.model_validate({**read_manifest(run_dir)["recipe"].get("bench", {}), **given})
    with run_lock(run_dir, console.print):  # it rewrites bench.json files and the manifest
        manifest = bench_run(run_dir, config, device, log=console.print)
    console.print(bench_table(manifest, run_dir))
    _print_incremental(run_dir, manifest)


def _bench_file(run_dir: Path, stage: dict[str, Any]) -> Optional[dict[str, Any]]:
    from compress.bench.results import BENCH_FILE
    from compress.runs.files import read_json
    from compress.runs.layout import stage_folder

    path = stage_folder(run_dir, stage) / BENCH_FILE
    return read_json(path) if path.is_file() else None


def _print_incremental(run_dir: Path, manifest: dict[str, Any]) -> None:
    """The per-event serving table of every stage whose bench.json has an `incremental` key."""
    from compress.bench.results import BENCH_FILE
    from compress.bench.incremental import ROW_COLUMNS, incremental_rows
    from compress.runs.files import read_json
    from compress.runs.layout import stage_folder

    for entry in manifest["stages"]:
        path = stage_folder(run_dir, entry) / BENCH_FILE
        result = read_json(path).get("incremental") if path.is_file() else None
        if result:
            table = Table(title=f"{entry['name']}: one new event per request (step = step.onnx over cached keys/values)")
            for column in ROW_COLUMNS:
                table.add_column(column, justify="left" if column == "mode" else "right")
            for row in incremental_rows(result):
                table.add_row(*row)
            console.print(table)


def validate_options(command: str, model: type[ModelT], values: dict[str, Any], flags: dict[str, str]) -> ModelT:
    """A command's options validated by the pydantic model the recipe uses for them; a mistake is one
    RecipeError (exit 2) naming the option, formatted as recipe errors are."""
    from pydantic import ValidationError

    from compress.recipe import format_validation_error

    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise RecipeError(f"invalid {command} option:\n{format_validation_error(exc, flags, model)}") from None


def bench_table(manifest: dict[str, Any], run_dir: Optional[Path] = None) -> Table:
    """One row per stage: batch-1 latency, throughput, memory and their ratios to the teacher. With `run_dir`,
    a latency from fewer than 3 rounds (or rounds that disagree, per the stage's bench.json) is marked ~noisy."""
    table = Table(title=f"run {manifest['name']}: benchmark (ratio = stage / teacher, same process)")
    for column in ("stage", "engine", "p50 ms", "p95 ms", "seq/s", "memory", "params"):
        table.add_column(column, justify="left" if column in ("stage", "engine") else "right")
    from compress.report.noise import latency_noise

    noisy = False
    for stage in manifest["stages"]:
        b, r = stage["bench"], stage["bench"]["ratios"]
        recorded = _bench_file(run_dir, stage) if run_dir is not None else None
        mark = " ~noisy" if recorded is not None and latency_noise(recorded) else ""
        kind = ((recorded or {}).get("memory") or {}).get("kind")
        noisy = noisy or bool(mark)
        table.add_row(
            stage["name"],
            b["engine"],
            f"{b['latency_p50_ms']:.2f} (x{r['latency_p50_ms']:.2f}){mark}",
            f"{b['latency_p95_ms']:.2f}",
            f"{b['throughput_seq_per_s']:,.0f} (x{r['throughput_seq_per_s']:.2f})",
            human_bytes(b["peak_memory_bytes"]) + (f" ({kind})" if kind else ""),
            f"{b['params']:,} (x{r['params']:.2f})",
        )
    if noisy:
        table.caption = "~noisy: timed in fewer than 3 rounds, or rounds more than 25% apart (--rounds 3)"
    return table


@app.command()
def report(
    run_dirs: list[Path] = typer.Argument(..., help="One or more run folders, e.g. artifacts/quickstart."),
    out: Optional[Path] = typer.Option(None, "--out", help="Report folder (default: <first run>/report)."),
) -> None:
    """Write report.md (+ PNG plots), a self-contained report.html and report.json for runs.

    A run benchmarked by benchmarks/headline.py also shows its control rows (scratch, teacher-onnx),
    mean ± std over training seeds and NDCG@10 intervals (from <run>/controls.json).

    Examples:

      compress report artifacts/quickstart

      compress report artifacts/ml1m artifacts/ml1m-small --out reports/ml1m
    """
    from compress.report import build_report

    files = build_report(run_dirs, out or run_dirs[0] / "report")
    console.print(f"report: {files.markdown}\n        {files.html}")


@app.command()
def ablate(
    recipe: Path = typer.Argument(..., help="Recipe YAML with an `ablation:` section."),
    override: Optional[list[str]] = typer.Option(
        None, "-o", "--set", help="Override a recipe value for every variant: key.path=value (repeatable)."
    ),
    out: Optional[Path] = typer.Option(None, "--out", help="Report folder (default: <output_dir>/<name>-ablation)."),
    force: bool = typer.Option(False, "--force/--no-force", help="Rerun every stage, ignoring cached results."),
    quiet: bool = typer.Option(False, "--quiet/--no-quiet", "-q", help="No progress bars."),
) -> None:
    """Run each variant of the recipe's `ablation:` section (sharing cached stages), then compare them.

    All final stages are timed in one bench session (at least 3 interleaved rounds; differences within
    the spread between rounds are marked as noise); NDCG@10 differences to the first variant come with a
    95% paired-bootstrap interval over test users.

    Examples:

      compress ablate recipes/examples/ablation_example.yaml
    """
    from compress.studies.ablation import plan_variants, run_ablation
    from compress.recipe import read_raw_recipe

    plan_variants(read_raw_recipe(recipe, override or []), str(recipe))  # mistakes in any variant, before torch
    from compress.pipeline import RunOptions

    options = RunOptions(force=force, show_progress=not quiet, log=console.print, show_warnings=_debug())
    result = run_ablation(recipe, override or [], options, out)
    for name, folder in result.runs.items():
        console.print(f"variant {name}: {folder}")
    console.print(f"report: {result.report.markdown}\n        {result.report.html}")


@app.command()
def search(
    spec: Path = typer.Argument(..., help="Search spec YAML, e.g. recipes/examples/quickstart_search.yaml."),
    override: Optional[list[str]] = typer.Option(
        None, "-o", "--set", help="Override a spec value: key.path=value (repeatable), e.g. budget.trials=10."
    ),
    storage: Optional[str] = typer.Option(
        None, "--storage", help="Optuna storage URL shared by workers (default: a journal file in the search folder)."
    ),
    worker: int = typer.Option(0, "--worker", min=0, help="This worker's index: seeds its sampler apart from the others'."),
    quiet: bool = typer.Option(False, "--quiet/--no-quiet", "-q", help="Only the trial verdicts, not every stage's log."),
) -> None:
    """Search stage settings for the fastest (or smallest) student within an NDCG@10 budget (Optuna).

    Rerun the same command to resume; run it in several shells to add workers. Exit 1 when no
    candidate passes (the closest are saved).

    Examples:

      compress search recipes/examples/quickstart_search.yaml

      compress search spec.yaml -o budget.trials=40 --storage postgresql://host/db --worker 1
    """
    from compress.search.spec import load_spec

    load_spec(spec, override or [])  # a mistake in the spec or any value of its space, before torch
    from compress.search.report import COLUMNS, frontier_rows
    from compress.search.runner import SearchOptions, run_search

    def log(message: str) -> None:
        if not (quiet and message.startswith("   ")):  # stage logs are indented under their trial
            console.print(message, highlight=False, markup=False)

    result = run_search(spec, override or [], SearchOptions(storage=storage, worker=worker, log=log))
    table = Table(title=f"search {result.folder.name}: frontier (validation decides, test beside)")
    shown = [i for i, column in enumerate(COLUMNS) if column not in ("values", "params")]  # values: frontier.json
    for i in shown:
        table.add_column(COLUMNS[i], justify="left" if i == 0 else "right")
    for row in frontier_rows(result.summary["frontier"]):
        table.add_row(*(row[i] for i in shown))
    console.print(table)
    console.print(result.message, highlight=False, markup=False)
    console.print(f"frontier: {result.folder / 'frontier.json'}" + (f"\nreport: {result.report}" if result.report else ""))
    if not result.found:
        raise typer.Exit(1)


def metrics_table(manifest: dict[str, Any], run_dir: Optional[Path] = None) -> Table:
    """One row per stage plus the popularity baseline: quality and cost side by side. `size` is the stage's
    folder; `model file` (last, with `run_dir`) the scoring model alone (model.onnx / model.safetensors, not
    step.onnx). On a small test set a `hits@10` column counts the users, with the difference to the teacher."""
    from compress.report.noise import SMALL_TEST, count_test_users, hits_cell, scoring_model_bytes

    users = count_test_users(manifest)
    small = 0 < users < SMALL_TEST
    stages = manifest["stages"]
    teacher_hr = stages[0]["metrics"]["hr@10"] if stages else None
    title = f"run {manifest['name']}: test split, full ranking" + (f", {users:,} test users" if users else "")
    table = Table(title=title)
    columns = ["stage", "params", "size", "ndcg@10", "hr@10", *(["hits@10 (vs teacher)"] if small else []),
               "mrr@10", "seconds", *(["model file"] if run_dir else [])]
    for column in columns:
        table.add_column(column, justify="left" if column == "stage" else "right")
    base = manifest["baseline"]["metrics"]
    table.add_row("popularity", "-", "-", f"{base['ndcg@10']:.4f}", f"{base['hr@10']:.4f}",
                  *([hits_cell(base["hr@10"], teacher_hr, users)] if small else []), f"{base['mrr@10']:.4f}", "-",
                  *(["-"] if run_dir else []))
    for index, stage in enumerate(stages):
        metrics = stage["metrics"]
        model = scoring_model_bytes(Path(run_dir) / stage["output"]) if run_dir and stage.get("output") else None
        table.add_row(
            stage["name"],
            f"{stage['params']:,}",
            human_bytes(stage["size_bytes"]),
            f"{metrics['ndcg@10']:.4f}",
            f"{metrics['hr@10']:.4f}",
            *([hits_cell(metrics["hr@10"], teacher_hr if index else None, users)] if small else []),
            f"{metrics['mrr@10']:.4f}",
            f"{stage['seconds']:.1f}",
            *([human_bytes(model) if model is not None else "-"] if run_dir else []),
        )
    return table


def _warn_small_data(manifest: dict[str, Any]) -> None:
    """After the run summary: a teacher within noise of the popularity baseline."""
    from compress.report.noise import popularity_warning

    warning = popularity_warning(manifest)
    if warning:
        errors.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)


@app.command()
def export(
    path: Path = typer.Argument(..., help="A run folder (its last PyTorch model) or a model folder."),
    out: Path = typer.Option(..., "--out", help="Folder for the ONNX artifact (model.onnx + metadata.json)."),
    top_k: int = typer.Option(10, "--top-k", help="K of the top-K computed inside the graph."),
    exporter: str = typer.Option(
        DEFAULT_EXPORTER, "--exporter",
        help="torch.onnx exporter: dynamo (as the export stage: fused attention, faster in onnxruntime) or legacy "
        "(TorchScript, much faster to export).",
    ),
    min_overlap: float = typer.Option(0.99, "--min-overlap", help="Parity gate: minimum top-10 overlap with PyTorch."),
    incremental: bool = typer.Option(
        False, "--incremental/--no-incremental", help="Also write step.onnx (append-one-event scoring with a KV cache)."
    ),
    max_len: Optional[int] = typer.Option(
        None, "--max-len", help="Serving window: score the last N events (default: the model's max_len)."
    ),
) -> None:
    """Export a PyTorch model to a self-contained ONNX artifact, checked for ranking parity.

    Examples:

      compress export artifacts/quickstart --out exported/quickstart

      compress export artifacts/ml1m/02-distill/model --out exported/student --top-k 20

      compress export artifacts/quickstart --out exported/quickstart --incremental

      compress export artifacts/ml1m --out exported/ml1m-100 --max-len 100   # score the last 100 events
    """
    from compress.export.onnx_export import ExportSettings, export_path
    from compress.evaluation.parity import ParityConfig
    from compress.runs.stage_log import warnings_to_log

    settings = validate_options("export", ExportSettings,
                                {"top_k": top_k, "exporter": exporter, "incremental": incremental, "max_len": max_len},
                                {"top_k": "--top-k", "exporter": "--exporter", "incremental": "--incremental",
                                 "max_len": "--max-len"})
    parity = validate_options("export", ParityConfig, {"min_overlap": min_overlap}, {"min_overlap": "--min-overlap"})
    with warnings_to_log(out, show=_debug()):  # the exporter's TracerWarnings go to <out>/log.txt
        result = export_path(path, out, settings, parity, log=console.print)
    if "metrics" in result:
        metrics = result["metrics"]
        console.print(f"onnxruntime test ndcg@10 {metrics['ndcg@10']:.4f}  hr@10 {metrics['hr@10']:.4f}")
    console.print(f"artifact: {result['artifact']}")


@app.command()
def predict(
    artifact: Path = typer.Argument(
        ..., help="A run folder (its last ONNX stage), a stage folder, or an ONNX artifact folder (onnx/)."
    ),
    history: Optional[str] = typer.Option(None, "--history", help='Original item ids, oldest first: "i1 i2 i3".'),
    input_file: Optional[Path] = typer.Option(
        None, "--input", help="One history per line (plain ids, a JSON list, or JSONL with a `history` key); "
        "with --stateful, `user item` events. '-' reads standard input (both modes)."
    ),
    top_k: Optional[int] = typer.Option(
        None, "--top-k", help="How many items, at most the K of the export.", show_default="the K of the export"
    ),
    cpu: bool = typer.Option(False, "--cpu/--no-cpu", help="Use the CPU provider even where CUDA is available."),
    engine: str = typer.Option(
        "onnxruntime", "--engine", help="What runs model.onnx: onnxruntime, or openvino (CPU; the openvino extra)."
    ),
    stateful: bool = typer.Option(
        False, "--stateful/--no-stateful", help="Read `user item` events; keep each user's KV state in memory (needs step.onnx); "
        "print the top-K after every event."
    ),
    max_users: int = typer.Option(100_000, "--max-users", min=1, help="--stateful: users kept in memory (LRU)."),
    refresh_every: Optional[int] = typer.Option(
        None, "--refresh-every", min=0, help="--stateful: past max_len, re-prefill the window every k events "
        "(1: exact, = the full pass; 0: slide only; default: the policy the artifact states, exact)."
    ),
) -> None:
    """Recommend the next items from an ONNX artifact with onnxruntime only (no PyTorch).

    --history prints `rank item score` per line; --input (a file, or - for standard input) prints JSON
    lines. Scores are the model's raw logits (unnormalised; higher ranks first), not probabilities.
    --stateful reads an event stream and prints one JSON line per event (an unknown item or a
    malformed line gives a line with `error` and changes no state); memory use goes to stderr at the end.

    The artifact and engine served go to stderr first: from a run folder, plain mode serves the last
    ONNX stage (e.g. 06-quantize) and --stateful the last one with step.onnx (e.g. 05-export).

    Examples:

      compress predict artifacts/quickstart --history "12 7 431"

      compress predict exported/quickstart --input histories.jsonl --top-k 5 > recs.jsonl

      compress predict artifacts/quickstart --history "12 7 431" --engine openvino

      compress predict artifacts/quickstart --stateful --input events.txt --max-users 10000
    """
    from compress.serve.locate import resolve_artifact
    from compress.serve.onnx_model import load_recommender
    from compress.serve.predict import InputError, Request, parse_history, read_requests, recommend

    device = "cpu" if cpu else "auto"
    if stateful:
        if top_k is not None and top_k < 1:  # not taken as the export's K
            raise InputError(f"top-k {top_k} is out of range: give 1 to the K of the export")
        if input_file is None or history is not None:
            raise InputError("--stateful reads events from --input FILE (or --input - for standard input)")
        if engine != "onnxruntime":
            raise InputError("--stateful runs step.onnx with onnxruntime only", "drop --engine")
        _predict_stateful(resolve_artifact(artifact, need_step=True), input_file, top_k, device, max_users,
                          refresh_every)
        return
    if (history is None) == (input_file is None):
        raise InputError("give exactly one of --history or --input")
    if history is not None:
        requests = [Request(parse_history(history))]
    elif str(input_file) == "-":
        requests = _stdin_requests()
    else:
        requests = read_requests(input_file)
    folder = resolve_artifact(artifact)
    model = load_recommender(folder, engine, "cpu" if cpu else "auto")
    _say_served(folder, "model.onnx", _engine_label(model))
    for result in recommend(model, requests, top_k):
        if result.dropped:
            where = f"line {result.request.line}: " if result.request.line else ""
            errors.print(f"[yellow]warning:[/] {where}unknown item ids dropped: {' '.join(result.dropped)}")
        if history is not None:
            for rank, (item, score) in enumerate(zip(result.items, result.scores), start=1):
                typer.echo(f"{rank}\t{item}\t{score:.6f}")
        else:
            record = {"line": result.request.line, "user": result.request.user, "items": result.items,
                      "scores": [round(s, 6) for s in result.scores]}
            typer.echo(json.dumps(record))


def _engine_label(model: Any) -> str:
    """What answers: `onnxruntime <provider>` for an onnxruntime session, `OpenVINO <device>` otherwise."""
    session = getattr(model, "session", None)
    if session is not None:
        return f"onnxruntime {session.get_providers()[0]}"
    engine = getattr(model, "engine", "onnxruntime")
    return f"OpenVINO {engine}" if engine.startswith("openvino") else engine


def _say_served(folder: Path, graph: str, engine: str) -> None:
    """stderr: which artifact folder and engine answer, and what the scores are."""
    errors.print(f"serving {folder} ({graph}, {engine}); scores are raw logits (higher is better)",
                 highlight=False, soft_wrap=True)


def _stdin_requests() -> list[Any]:
    """`predict --input -`: histories from standard input, in the formats of an input file."""
    import tempfile

    from compress.serve.predict import InputError, read_requests

    data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode("utf-8")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "stdin"
        path.write_bytes(data)
        try:
            return read_requests(path)
        except InputError as exc:  # name standard input, not the temporary file
            raise InputError(exc.message.replace(str(path), "<stdin>"), exc.hint) from None


def _predict_stateful(
    folder: Path, input_file: Path, top_k: Optional[int], device: str, max_users: int, refresh_every: Optional[int],
) -> None:
    """`compress predict --stateful`: events in, one JSON line per event out (compress/serve/stateful.py)."""
    from compress.serve.predict import InputError
    from compress.serve.stateful import StatefulRecommender, event_records

    if str(input_file) != "-" and not input_file.is_file():
        raise InputError(f"input file not found: {input_file}")
    try:
        server = StatefulRecommender(folder, max_users, refresh_every, top_k, device)
    except ValueError as exc:
        raise InputError(str(exc), "re-export with a larger top_k") from None
    _say_served(folder, "step.onnx, stateful", _engine_label(server.model))
    stream = sys.stdin if str(input_file) == "-" else input_file.open(encoding="utf-8")
    with stream:
        try:
            for record in event_records(server, stream):
                if "error" in record:
                    errors.print(f"[yellow]warning:[/] line {record['line']}: {escape(record['error'])}", highlight=False)
                typer.echo(json.dumps(record))
        except UnicodeDecodeError as exc:
            raise InputError(f"{input_file}: not UTF-8 text ({exc.reason}); the events before it were applied",
                             "save the file as UTF-8 (user and item ids are text)") from None
    stats = server.stats()
    errors.print(f"users in memory {stats['users']:,} (max {stats['max_users']:,}), evicted {stats['evictions']:,}; "
                 f"state {human_bytes(int(stats['state_bytes_per_user_mean']))} per user on average, "
                 f"{human_bytes(stats['state_bytes_per_user_at_max_len'])} at max_len, "
                 f"{human_bytes(stats['state_bytes_total'])} in all", highlight=False)


@app.command()
def serve(
    artifact: Path = typer.Argument(
        ..., help="A run folder (its last ONNX stage; /events from its last stage with step.onnx), a stage folder, "
        "or an ONNX artifact folder (onnx/)."
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback unless told otherwise)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="TCP port."),
    max_batch: int = typer.Option(64, "--max-batch", min=1, help="Histories or events per onnxruntime call."),
    max_wait_ms: float = typer.Option(2.0, "--max-wait-ms", min=0, help="How long a batch waits for more requests."),
    redis: Optional[str] = typer.Option(
        None, "--redis", help="Redis URL for the users' state, shared by replicas (default: in this process)."
    ),
    workers: int = typer.Option(1, "--workers", min=1, help="uvicorn worker processes (several need --redis)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="onnxruntime threads per worker."),
    max_users: int = typer.Option(1_000_000, "--max-users", min=1, help="In-process state: users kept (LRU)."),
    cache_users: Optional[int] = typer.Option(
        None, "--cache-users", min=1, help="KV cache slots per worker (LRU; default: as many as --cache-mb holds)."
    ),
    cache_mb: int = typer.Option(2048, "--cache-mb", min=1, help="KV cache memory per worker, MiB."),
    overflow: Optional[str] = typer.Option(
        None, "--overflow", help="Past max_len: exact (a full pass over the window) or slide (default: the artifact's)."
    ),
    max_body_bytes: int = typer.Option(1 << 20, "--max-body-bytes", min=1, help="Largest request body."),
    max_histories: int = typer.Option(256, "--max-histories", min=1, help="Histories per /recommend request."),
    max_events: int = typer.Option(1024, "--max-events", min=1, help="Events per /events request."),
    log_level: str = typer.Option("warning", "--log-level", help="uvicorn log level."),
) -> None:
    """Serve an ONNX artifact over HTTP: POST /recommend, POST /events, GET /healthz /readyz /metrics /model.

    Concurrent requests are micro-batched into one onnxruntime call; /events keeps each user's window
    in Redis (--redis) or in this process. Torch-free. Needs `pip install 'compress[serve]'`.

    Examples:

      compress serve artifacts/quickstart_export --port 8000

      compress serve artifacts/ml1m --redis redis://127.0.0.1:6379/0 --workers 2
    """
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
        import prometheus_client  # noqa: F401
    except ImportError as exc:
        raise CompressError(f"compress serve needs {exc.name}", "pip install 'compress[serve]'") from None
    from compress.serve.requests import Limits
    from compress.serve.server import serve as run_server
    from compress.serve.service import ServeConfig

    limits = Limits(max_body_bytes=max_body_bytes, max_histories=max_histories, max_events=max_events)
    config = ServeConfig(str(artifact), host, port, max_batch, max_wait_ms, redis, workers=workers, threads=threads,
                         max_users=max_users, cache_users=cache_users, cache_mb=cache_mb, overflow=overflow,
                         limits=limits)
    run_server(config, log_level)


def _reflow(doc: str) -> str:
    """A docstring for the help screen: each prose paragraph on one line (the terminal wraps it), so source
    line breaks do not come out ragged; indented paragraphs (examples) are kept as written."""
    import inspect

    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(
        p if any(line.startswith(" ") for line in p.splitlines()) else " ".join(p.split()) for p in paragraphs
    )


def _help_texts() -> None:
    from compress.data.config import FORMAT_HELP

    for command in app.registered_commands:
        callback = command.callback
        if callback is not None and callback.__doc__:
            callback.__doc__ = _reflow(callback.__doc__.replace("{formats}", FORMAT_HELP))


_help_texts()


def main() -> None:
    """Console entry point: a CompressError is a message and exit code 2; tracebacks with --debug."""
    signal.signal(signal.SIGTERM, _terminate)  # `kill <pid>` unwinds like Ctrl-C: the run lock is released
    try:
        app()
    except CompressError as exc:
        if os.environ.get(DEBUG_ENV):
            raise
        errors.print(f"[bold red]error:[/] {escape(exc.message)}", highlight=False, soft_wrap=True)
        if exc.hint:
            errors.print(f"[yellow]hint:[/] {escape(exc.hint)}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except SystemExit as exc:
        if exc.code == INTERRUPTED:  # typer turns KeyboardInterrupt (Ctrl-C, or SIGTERM below) into exit 130
            errors.print("interrupted: finished stages are kept; rerun the same command to resume")
        raise


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # unwinds through every `finally`: temp files removed, run lock released

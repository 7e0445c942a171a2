"""The `compress` command line: parse, call the library, print. User mistakes exit 2, no traceback."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from compress.errors import CompressError

app = typer.Typer(
    help="Turn an LLM-backbone sequential recommender into small, fast, deployable students.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
errors = Console(stderr=True)
DEBUG_ENV = "COMPRESS_DEBUG"


@app.callback()
def _global(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    if debug:
        os.environ[DEBUG_ENV] = "1"


@app.command()
def run(
    recipe: Path = typer.Argument(..., help="Recipe YAML file, e.g. recipes/quickstart.yaml."),
    override: Optional[list[str]] = typer.Option(
        None, "-o", "--set", help="Override a recipe value: key.path=value (repeatable)."
    ),
    force: bool = typer.Option(False, "--force", help="Rerun every stage, ignoring cached results."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Run the pipeline a recipe describes; finished stages with unchanged inputs are reused.

    Examples:

      compress run recipes/quickstart.yaml

      compress run recipes/ml1m.yaml -o data.path=../shared/datasets/ml-1m.txt -o stages.train.epochs=5
    """
    from compress.pipeline import RunOptions, run_recipe
    from compress.recipe import load_recipe

    loaded = load_recipe(recipe, override or [])
    manifest = run_recipe(loaded, RunOptions(force=force, show_progress=not quiet, log=console.print))
    console.print(metrics_table(manifest))
    console.print(f"run folder: {loaded.output_dir / loaded.name}  ({manifest['seconds']:.1f}s)")


def metrics_table(manifest: dict[str, Any]) -> Table:
    """One row per stage plus the popularity baseline: quality and cost side by side."""
    table = Table(title=f"run {manifest['name']}: test split, full ranking")
    for column in ("stage", "params", "size", "ndcg@10", "hr@10", "mrr@10", "seconds"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    base = manifest["baseline"]["metrics"]
    table.add_row("popularity", "-", "-", *(f"{base[k]:.4f}" for k in ("ndcg@10", "hr@10", "mrr@10")), "-")
    for stage in manifest["stages"]:
        metrics = stage["metrics"]
        table.add_row(
            stage["name"],
            f"{stage['params']:,}",
            _human_bytes(stage["size_bytes"]),
            *(f"{metrics[k]:.4f}" for k in ("ndcg@10", "hr@10", "mrr@10")),
            f"{stage['seconds']:.1f}",
        )
    return table


def _human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def main() -> None:
    """Console entry point: a CompressError is a message and exit code 2; tracebacks with --debug."""
    try:
        app()
    except CompressError as exc:
        if os.environ.get(DEBUG_ENV):
            raise
        errors.print(f"[bold red]error:[/] {exc.message}", highlight=False)
        if exc.hint:
            errors.print(f"[yellow]hint:[/] {exc.hint}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        errors.print("interrupted: finished stages are kept; rerun the same command to resume")
        sys.exit(130)

"""The command line's habits (issue 34, item 4): --flag/--no-flag, defaults shown, --version, the export
command's exporter = the export stage's, `predict` saying what it serves and reading standard input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from compress.cli import DEFAULT_EXPORTER, app

WIDE = {"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
NO_TORCH_CLI = "import sys; sys.modules['torch'] = None; from compress.cli import main; sys.argv[0] = 'compress'; main()"


def help_of(*command: str) -> str:
    result = CliRunner().invoke(app, [*command, "--help"], env=WIDE)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("command", ["run", "bench", "report", "ablate", "search", "export", "predict", "serve"])
def test_no_flag_renders_as_taking_a_bool(command):
    assert "<bool>" not in help_of(command)


@pytest.mark.parametrize("command, flag", [("run", "--force"), ("run", "--quiet"), ("ablate", "--force"),
                                           ("export", "--incremental"), ("predict", "--cpu"),
                                           ("predict", "--stateful"), ("search", "--quiet")])
def test_flags_have_a_negative_form(command, flag):
    text = help_of(command)
    assert f"--no-{flag[2:]}" in text


def test_defaults_are_shown():
    assert "[default: 1]" in help_of("run")  # --nproc
    text = " ".join(help_of("predict").split())
    assert "[default: (the K of the export)]" in text and "[default: 100000]" in text
    assert f"[default: {DEFAULT_EXPORTER}]" in help_of("export")


def test_export_command_uses_the_export_stage_exporter():
    from compress.export.config import ExportSettings

    assert DEFAULT_EXPORTER == ExportSettings.model_fields["exporter"].default == "dynamo"


def test_version():
    from compress import __version__

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"compress {__version__}"


def test_help_prose_is_not_ragged():
    """Docstring paragraphs are reflowed: a source line break does not end a help line early."""
    text = help_of("search")
    assert "Exit 1 when no candidate passes" in " ".join(text.split())
    from compress.cli import _reflow

    assert _reflow("One\n    two.\n\n    Examples:\n\n      a b\n      c d\n") == "One two.\n\nExamples:\n\n  a b\n  c d"


def cli(*args, stdin=None):
    result = subprocess.run([sys.executable, "-c", NO_TORCH_CLI, *args], capture_output=True, text=True, input=stdin)
    result.stderr = " ".join(result.stderr.split())
    return result


def test_predict_names_what_it_serves_and_reads_stdin(tiny_onnx, tiny_data):
    _, folder = tiny_onnx
    original = tiny_data.item_ids.tolist()
    result = cli("predict", str(folder), "--history", f"{original[2]} {original[16]}", "--top-k", "3")
    assert result.returncode == 0, result.stderr
    assert f"serving {folder} (model.onnx, onnxruntime CPUExecutionProvider)" in result.stderr
    assert "scores are raw logits" in result.stderr
    assert len(result.stdout.splitlines()) == 3

    text = f'{{"user": "a", "history": [{original[0]}]}}\n{original[1]} {original[2]}\n'
    result = cli("predict", str(folder), "--input", "-", "--top-k", "2", stdin=text)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["user"] for r in records] == ["a", None] and all(len(r["items"]) == 2 for r in records)

    result = cli("predict", str(folder), "--input", "-", stdin="\n")
    assert result.returncode == 2 and "<stdin> holds no history" in result.stderr, result.stderr

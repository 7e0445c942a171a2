"""A stage's `log.txt`: its messages (echoed to the terminal) and the Python warnings its libraries
raise (the ONNX exporter's TracerWarnings, onnxruntime's quantizer, ...), which stay in the file
so the terminal shows progress and results only. `--debug` prints the warnings as well.
"""

from __future__ import annotations

import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from compress.runs.layout import LOG_FILE


def append_line(log_file: Path, message: str) -> None:
    """Add a time-stamped line to a log file."""
    with open(log_file, "a") as handle:
        handle.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')}  {message}\n")


def stage_logger(folder: Path, echo: Callable[[str], None]) -> Callable[[str], None]:
    """log(message): into `<folder>/log.txt`, and to `echo` (the terminal)."""

    def log(message: str) -> None:
        append_line(folder / LOG_FILE, message)
        echo(message)

    return log


@contextmanager
def warnings_to_log(folder: Path, show: bool = False) -> Iterator[None]:
    """Python warnings raised inside are written to `<folder>/log.txt` as they come (the active filters
    still apply: what Python would not show is not logged); with `show` they are also printed as usual."""
    with warnings.catch_warnings():  # restores the printer on the way out
        printer = warnings.showwarning

        def log_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
            folder.mkdir(parents=True, exist_ok=True)
            text = warnings.formatwarning(message, category, filename, lineno, line)
            append_line(folder / LOG_FILE, f"warning: {text.rstrip()}")
            if show:
                printer(message, category, filename, lineno, file, line)

        warnings.showwarning = log_warning
        yield

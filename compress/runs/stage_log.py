"""A stage's `log.txt`: its messages (echoed to the terminal) and the Python warnings and log
records of warning level its libraries emit (the ONNX exporter's TracerWarnings, torch's
`torchvision is not installed` lines, ...), which stay in the file so the terminal shows
progress and results only. `--debug` prints them as well.
"""

from __future__ import annotations

import logging
import sys
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
        if show:
            yield
        else:
            with _log_records_to(folder):
                yield


class _FileHandler(logging.Handler):
    def __init__(self, folder: Path) -> None:
        super().__init__(logging.WARNING)
        self.folder = folder

    def emit(self, record: logging.LogRecord) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        append_line(self.folder / LOG_FILE, f"log: {record.levelname} {record.name}: {record.getMessage()}")


@contextmanager
def _log_records_to(folder: Path) -> Iterator[None]:
    """Handlers that print log records on the terminal (and Python's last-resort one) write to the
    stage's log.txt instead, while inside."""
    handler = _FileHandler(folder)
    terminals = (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__)
    loggers = [logging.getLogger(), *(
        logger for logger in logging.Logger.manager.loggerDict.values() if isinstance(logger, logging.Logger)
    )]
    swapped = []
    for logger in loggers:
        printing = [h for h in logger.handlers if isinstance(h, logging.StreamHandler)
                    and not isinstance(h, logging.FileHandler) and h.stream in terminals]
        if printing:
            swapped.append((logger, printing))
            for printer in printing:
                logger.removeHandler(printer)
            logger.addHandler(handler)
    last_resort, logging.lastResort = logging.lastResort, handler
    try:
        yield
    finally:
        logging.lastResort = last_resort
        for logger, printing in swapped:
            logger.removeHandler(handler)
            for printer in printing:
                logger.addHandler(printer)

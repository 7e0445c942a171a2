import warnings

import pytest

from compress.runs.stage_log import warnings_to_log


def test_warnings_go_to_the_log_not_the_terminal(tmp_path):
    with warnings.catch_warnings(record=True) as printed:  # what would reach the terminal
        warnings.simplefilter("always")
        with warnings_to_log(tmp_path / "stage"):
            warnings.warn("a tracer warning", UserWarning)
    assert printed == []
    assert "UserWarning: a tracer warning" in (tmp_path / "stage" / "log.txt").read_text()


def test_with_show_they_are_printed_as_usual_too(tmp_path):
    with pytest.warns(UserWarning, match="shown with --debug"):  # pytest's printer stands for the terminal
        with warnings_to_log(tmp_path, show=True):
            warnings.warn("shown with --debug", UserWarning)
    assert "shown with --debug" in (tmp_path / "log.txt").read_text()


def test_the_filters_still_apply_and_the_printer_is_restored(tmp_path):
    printer = warnings.showwarning
    with warnings_to_log(tmp_path), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.warn("ignored", UserWarning)
    assert not (tmp_path / "log.txt").exists()
    assert warnings.showwarning is printer


def test_log_records_printed_on_the_terminal_go_to_the_log_too(tmp_path, capsys):
    import logging
    import sys

    logger = logging.getLogger("compress-test-library")
    printer = logging.StreamHandler(sys.stderr)  # as torch's own logging setup does
    logger.addHandler(printer)
    try:
        with warnings_to_log(tmp_path):
            logger.warning("torchvision is not installed")
            quiet = logging.getLogger("compress-test-quiet")
            quiet.propagate = False  # no handler anywhere: Python's last resort prints it on stderr
            quiet.warning("through the last resort")
        assert capsys.readouterr().err == ""
        text = (tmp_path / "log.txt").read_text()
        assert "WARNING compress-test-library: torchvision is not installed" in text
        assert "through the last resort" in text
        assert logger.handlers == [printer]  # restored
    finally:
        logger.removeHandler(printer)

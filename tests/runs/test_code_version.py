import shutil

from compress.runs.code_version import NOT_RESULTS, PACKAGE, code_fingerprint, source_fingerprint


def copy_package(tmp_path):
    return shutil.copytree(PACKAGE, tmp_path / "compress", ignore=shutil.ignore_patterns("__pycache__"))


def test_a_source_edit_changes_the_fingerprint_and_cli_or_report_edits_do_not(tmp_path):
    package = copy_package(tmp_path)
    before = source_fingerprint(package)
    losses = package / "training" / "losses.py"
    original = losses.read_text()
    losses.write_text(original.replace("def ", "def  ", 1))
    assert source_fingerprint(package) != before
    losses.write_text(original)
    assert source_fingerprint(package) == before

    (package / "cli.py").write_text("# the command line only\n")
    (package / "report" / "extra.py").write_text("X = 1\n")
    (package / "search" / "runner.py").write_text("# the search orchestrates runs; no stage imports it\n")
    (package / "studies" / "controls.py").write_text("# a study orchestrates runs too\n")
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    assert source_fingerprint(package) == before

    (package / "training" / "new_loss.py").write_text("X = 1\n")
    assert source_fingerprint(package) != before


def test_no_stage_imports_what_the_fingerprint_leaves_out():
    """A package left out of the fingerprint must not be imported by code that makes stage outputs."""
    for path in PACKAGE.rglob("*.py"):
        top = path.relative_to(PACKAGE).parts[0]
        if top in NOT_RESULTS:
            continue
        text = path.read_text()
        for package in ("search", "studies"):
            assert f"compress.{package}" not in text and f"from compress import {package}" not in text, path


def test_the_cached_fingerprint_is_the_installed_package():
    assert code_fingerprint() == source_fingerprint(PACKAGE)

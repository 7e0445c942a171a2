"""benchmarks/README.md is the index of benchmarks/: it names every script and every results folder,
its scripts table names only scripts that exist, and its links (and README.md's and docs/'s links into
benchmarks/) resolve, anchors included."""

from __future__ import annotations

import re

import pytest

from tests.benchmarks.conftest import BENCHMARKS, ROOT
from tests.markdown_links import broken_links, links, slug

INDEX = BENCHMARKS / "README.md"


def scripts() -> list[str]:
    """Every script under benchmarks/ (results/ and runs/ hold outputs), relative to benchmarks/."""
    found = [p for p in BENCHMARKS.rglob("*") if p.suffix in (".py", ".sh") and p.is_file()]
    return sorted(str(p.relative_to(BENCHMARKS)) for p in found
                  if p.relative_to(BENCHMARKS).parts[0] not in ("results", "runs") and "__pycache__" not in p.parts)


def test_every_script_is_in_the_index():
    text = INDEX.read_text()
    assert len(scripts()) >= 10
    assert [s for s in scripts() if f"`{s}`" not in text] == []


def test_the_scripts_table_names_only_scripts_that_exist():
    table = INDEX.read_text().split("## Scripts", 1)[1].split("\n\n", 2)[1]
    named = re.findall(r"^\| `([^`]+)` \|", table, re.M)
    assert named and sorted(named) == scripts()


def test_every_results_folder_has_a_section():
    headings = re.findall(r"^### (\S+)", INDEX.read_text(), re.M)
    folders = sorted(p.name for p in (BENCHMARKS / "results").iterdir() if p.is_dir())
    assert [f for f in folders if f not in headings] == []
    assert [h for h in headings if h not in folders] == []


def test_no_dated_headings():
    assert re.findall(r"^#+ .*\d{4}-\d{2}-\d{2}.*$", INDEX.read_text(), re.M) == []


@pytest.mark.parametrize("markdown", [INDEX, *sorted((BENCHMARKS / "results").rglob("README.md"))],
                         ids=lambda p: str(p.relative_to(BENCHMARKS)))
def test_links_resolve(markdown):
    assert broken_links(markdown) == []


def test_readme_links_into_benchmarks_resolve():
    readme = ROOT / "README.md"
    into = [t for t in links(readme) if t.startswith("benchmarks/")]
    assert into, "README.md links to the benchmark results"
    assert [b for b in broken_links(readme) if ": benchmarks/" in b] == []


def test_docs_links_into_benchmarks_resolve():
    """The result tables and prose moved from README.md to docs/ (docs/results.md): their links too."""
    pages = sorted((ROOT / "docs").glob("*.md"))
    into = [t for page in pages for t in links(page) if t.startswith("../benchmarks/")]
    assert into, "docs/ links to the benchmark results"
    assert [b for page in pages for b in broken_links(page) if ": ../benchmarks/" in b] == []


def test_slug_matches_github():
    assert slug("The 8-layer stacks: the first results, CPU and H200") == "the-8-layer-stacks-the-first-results-cpu-and-h200"
    assert slug("ml1m-cuda") == "ml1m-cuda" and slug("`compress search` on X (2026-11-30)") == "compress-search-on-x-2026-11-30"

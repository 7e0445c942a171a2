"""README.md and docs/*.md: every local link resolves, anchors included; README stays short and in the
order of use (issue 34)."""

from __future__ import annotations

import re

import pytest

from tests.markdown_links import ROOT, broken_links, prose

README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("markdown", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_local_links_and_anchors_resolve(markdown):
    assert broken_links(markdown) == []


def test_the_checker_catches_a_broken_link_and_anchor(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Other\n\n## A section\n")
    page.write_text("# Page\n\n[ok](other.md#a-section) [top](#page) [no](missing.md) [bad](other.md#nope)\n"
                    "```bash\n# not-a-heading\n```\n[code](#not-a-heading)\n")
    assert broken_links(page, tmp_path) == ["page.md: missing.md (no such file)",
                                            "page.md: other.md#nope (no such heading)",
                                            "page.md: #not-a-heading (no such heading)"]


def test_every_docs_page_is_linked_from_the_readme():
    text = README.read_text(encoding="utf-8")
    assert [p.name for p in PAGES[1:] if f"(docs/{p.name}" not in text] == []


def test_readme_is_short_and_in_the_order_of_use():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    headings = re.findall(r"^## (.+)$", prose(README), re.M)
    order = ["Two commands", "Your own data", "Commands", "Headline result"]
    assert [h for h in headings if h in order] == order
    assert text.index("data ──► train") < text.index("## Two commands")  # the pipeline picture first


def test_prose_lines_are_wrapped():
    """No paragraph on one 200-word line (issue 34): prose lines of README.md and docs/results.md stay short."""
    for markdown in (README, ROOT / "docs" / "results.md"):
        long = [line[:60] for line in prose(markdown).splitlines() if len(line) > 200 and not line.startswith("|")]
        assert long == [], markdown.name


def test_the_layout_names_every_package_folder():
    """docs/architecture.md's source tree is whole (the README once kept a headless fragment of it)."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    folders = sorted(p.parent.name for p in (ROOT / "compress").glob("*/__init__.py"))
    assert [f for f in folders if f"      {f}/" not in text] == []

"""README.md and docs/*.md: every local link resolves, anchors included; README stays short and in the
order of use (issue 34)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def prose(markdown: Path) -> str:
    """The file without its fenced code blocks (a `# comment` in a shell block is no heading)."""
    return FENCE.sub("", markdown.read_text(encoding="utf-8"))


def anchors(markdown: Path) -> set[str]:
    return {slug(h) for h in re.findall(r"^#{1,6} (.+)$", prose(markdown), re.M)}


def broken_links(markdown: Path) -> list[str]:
    broken = []
    for target in LINK.findall(prose(markdown)):
        if re.match(r"[a-z]+:", target):  # http(s), mailto
            continue
        path, _, anchor = target.partition("#")
        resolved = (markdown.parent / path).resolve() if path else markdown
        if not resolved.exists():
            broken.append(f"{markdown.relative_to(ROOT)}: {target} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{markdown.relative_to(ROOT)}: {target} (no such heading)")
    return broken


@pytest.mark.parametrize("markdown", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_local_links_and_anchors_resolve(markdown):
    assert broken_links(markdown) == []


def test_the_checker_catches_a_broken_link_and_anchor(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Other\n\n## A section\n")
    page.write_text("# Page\n\n[ok](other.md#a-section) [top](#page) [no](missing.md) [bad](other.md#nope)\n"
                    "```bash\n# not-a-heading\n```\n[code](#not-a-heading)\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        assert broken_links(page) == ["page.md: missing.md (no such file)", "page.md: other.md#nope (no such heading)",
                                      "page.md: #not-a-heading (no such heading)"]
    finally:
        ROOT = saved


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

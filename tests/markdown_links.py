"""Local links of Markdown pages, checked as GitHub renders them (shared by the README, docs and
benchmarks index tests)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
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


def links(markdown: Path) -> list[str]:
    """Link targets outside code blocks."""
    return LINK.findall(prose(markdown))


def broken_links(markdown: Path, root: Path = ROOT) -> list[str]:
    """`page: target (why)` for every local link whose file or heading does not exist."""
    broken = []
    for target in links(markdown):
        if re.match(r"[a-z]+:", target):  # http(s), mailto
            continue
        path, _, anchor = target.partition("#")
        resolved = (markdown.parent / path).resolve() if path else markdown
        if not resolved.exists():
            broken.append(f"{markdown.relative_to(root)}: {target} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{markdown.relative_to(root)}: {target} (no such heading)")
    return broken

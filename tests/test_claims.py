"""Every number README.md and docs/*.md quote from a benchmark is found in committed JSON under
benchmarks/results/.

tests/claims.yaml lists the claims: the doc (README.md unless `doc:` names a page under docs/) and its
line, the number as printed, the JSON file and key it comes from (or two keys whose quotient it is) and
the rounding. Each claim must appear on exactly one line of its doc and its JSON value must round to
it; in the headline tables every number is claimed.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = "README.md"
CLAIMS = Path(__file__).with_name("claims.yaml")
RESULTS = ROOT / "benchmarks" / "results"
NUMBER = re.compile(r"[+-]?\d[\d,]*(?:\.\d+)?")


@cache
def doc_lines(doc: str = README) -> list[str]:
    path = ROOT / doc
    assert path.resolve() == (ROOT / README).resolve() or path.resolve().parent == (ROOT / "docs").resolve(), (
        f"{doc}: a claim's doc is README.md or a page under docs/")
    return path.read_text(encoding="utf-8").splitlines()


def claims() -> list[dict[str, Any]]:
    """Every claim of claims.yaml with its group's file, line and path prefix filled in."""
    out = []
    for group in yaml.safe_load(CLAIMS.read_text(encoding="utf-8"))["groups"]:
        for claim in group["claims"]:
            out.append({"file": group["file"], "line": group["line"], "at": group.get("at", ""),
                        "doc": group.get("doc", README), **claim})
    return out


@cache
def load(file: str) -> Any:
    path = ROOT / file
    assert path.resolve().is_relative_to(RESULTS), f"{file}: claims must come from benchmarks/results/"
    return json.loads(path.read_text(encoding="utf-8"))


def lookup(data: Any, path: str) -> Any:
    """Follow `path`: names and list indices joined by dots, each optionally followed by [field=value]
    filters that pick the one item of a list whose field prints as value (e.g. stages[stage=prune])."""
    node = data
    for part in re.findall(r"(?:[^.\[]|\[[^\]]*\])+", path):
        name, filters = re.fullmatch(r"([^\[]*)(.*)", part).groups()
        if name:
            node = node[int(name)] if isinstance(node, list) else node[name]
        if filters:
            matches = [item for item in node if all(str(item.get(key)) == value
                                                    for key, value in re.findall(r"\[([^=\]]+)=([^\]]*)\]", filters))]
            assert len(matches) == 1, f"{part!r} picks {len(matches)} items"
            node = matches[0]
    return node


def resolve(claim: dict[str, Any], key: str, file: str) -> int | float:
    path = key[1:] if key.startswith("/") else ".".join(p for p in (claim["at"], key) if p)
    value = lookup(load(file), path)
    assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{file} {path} is not a number: {value!r}"
    return value


def value_of(claim: dict[str, Any]) -> int | float:
    """The claim's JSON value (an integer stays one, for "{:,}"), divided by `over`, scaled and offset."""
    value = resolve(claim, claim["key"], claim["file"])
    if "over" in claim:
        over_file = claim.get("over_file")
        # a path into another file starts from its root; into the same file, from the group's `at`
        value /= resolve({**claim, "at": ""} if over_file else claim, claim["over"], over_file or claim["file"])
    if "scale" in claim or "offset" in claim:
        value = value * claim.get("scale", 1) + claim.get("offset", 0)
    return value


def the_line(selector: str, doc: str = README) -> str:
    found = [line for line in doc_lines(doc) if selector in line]
    assert len(found) == 1, f"{doc} has {len(found)} lines with {selector!r} (the claim must pick one)"
    return found[0]


ALL = claims()


@pytest.mark.parametrize("claim", ALL, ids=[f"{c['doc']}:{c['file'].split('/')[-2]}:{c['text']}" for c in ALL])
def test_a_quoted_number_is_in_the_readme_and_rounds_from_its_json(claim):
    assert claim["text"] in the_line(claim["line"], claim["doc"]), (
        f"{claim['text']!r} is not on the {claim['doc']} line {claim['line']!r}")
    assert claim["format"].format(value_of(claim)) == claim["text"], (
        f"{claim['file']} {claim['key']} gives {claim['format'].format(value_of(claim))!r}, "
        f"{claim['doc']} prints {claim['text']!r}"
    )


def numbers(text: str) -> set[str]:
    return {token.rstrip(",") for token in NUMBER.findall(text)}


def test_every_number_in_the_headline_tables_is_claimed():
    """In each table listed under `tables`, every number outside the row label is a claim of that row."""
    claimed: dict[tuple[str, str], set[str]] = {}
    for claim in ALL:
        claimed.setdefault((claim["doc"], the_line(claim["line"], claim["doc"])), set()).update(numbers(claim["text"]))
    for table in yaml.safe_load(CLAIMS.read_text(encoding="utf-8"))["tables"]:
        doc, header = (table["doc"], table["header"]) if isinstance(table, dict) else (README, table)
        lines = doc_lines(doc)
        starts = [i for i, line in enumerate(lines) if line.startswith(header)]
        assert len(starts) == 1, f"{doc} has {len(starts)} tables whose header starts with {header!r}"
        rows = []
        for line in lines[starts[0] + 2:]:  # after the header and its |---| line
            if not line.startswith("|"):
                break
            rows.append(line)
        assert len(rows) >= 4, f"the table {header!r} has {len(rows)} rows"
        for row in rows:
            cells = [cell.strip() for cell in row.strip("|").split("|")]
            shown = set().union(*(numbers(cell) for cell in cells[1:]))  # the label (cells[0]) is a description
            missing = shown - claimed.get((doc, row), set())
            assert not missing, f"{cells[0]!r}: {sorted(missing)} have no claim in tests/claims.yaml"


def test_the_lookup_picks_one_item_and_fails_loudly(monkeypatch):
    data = {"rows": [{"name": "a", "n": 1, "v": {"x": 2.5}}, {"name": "b", "n": 1, "v": {"x": 4}}], "l": [[7, 8]]}
    assert lookup(data, "rows[name=b].v.x") == 4 and lookup(data, "rows[n=1][name=a].v.x") == 2.5
    assert lookup(data, "l.0.1") == 8
    with pytest.raises(AssertionError, match="picks 2 items"):
        lookup(data, "rows[n=1].v.x")
    monkeypatch.setitem(globals(), "load", lambda file: data)  # the arithmetic of a claim alone
    claim = {"file": "f", "at": "rows[name=a]", "key": "v.x", "over": "/rows[name=b].v.x", "scale": 100, "offset": -1}
    assert value_of(claim) == pytest.approx(2.5 / 4 * 100 - 1)
    assert value_of({**claim, "over": "v.x"}) == pytest.approx(99)  # `over` starts at `at` too


def test_claims_cover_the_readme_and_the_results_page():
    docs = {claim["doc"] for claim in ALL}
    assert {"README.md", "docs/results.md"} <= docs

"""The README and docs/: every relative Markdown link resolves, to a file of the repository and, with an
anchor, to a heading of that file (as GitHub names its anchors); every docs/ page is linked from the
README, which stays a front door. Files are only read: no Spark, no network."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from tests.reject_examples import markdown_table
from ventas.lab.processes import ROOT

README = ROOT / "README.md"
DOCS = ROOT / "docs"
DOCUMENTS = [README, *sorted(DOCS.glob("*.md"))]
README_MAX_LINES = 250

FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"`[^`\n]*`")
# [text](target) and ![alt](target), the target optionally in <...> and followed by a "title".
LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$", re.MULTILINE)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")  # http:, https:, mailto: ...


def prose(text: str) -> str:
    """The text outside fenced code blocks (whose `#` lines are comments, not headings, and whose
    brackets are code, not links)."""
    kept, fence = [], None
    for line in text.splitlines():
        opening = FENCE.match(line)
        if fence is None and opening:
            fence = opening.group(1)
        elif fence is not None and line.strip().startswith(fence):
            fence = None
        elif fence is None:
            kept.append(line)
    return "\n".join(kept)


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: a link counts by its text; lowercase, punctuation but '-' and '_'
    removed, each space a '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(document: Path) -> set[str]:
    """Every heading's anchor in a Markdown file; a repeated one gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for heading in HEADING.findall(prose(document.read_text())):
        slug = anchor(heading)
        repeats = seen.get(slug, 0)
        seen[slug] = repeats + 1
        found.add(slug if repeats == 0 else f"{slug}-{repeats}")
    return found


def relative_links(text: str) -> list[str]:
    """The targets of the relative links in Markdown text, outside code."""
    targets = LINK.findall(CODE_SPAN.sub("", prose(text)))
    return [target for target in targets if not SCHEME.match(target)]


def broken_links(text: str, source: Path) -> list[str]:
    """The relative links of Markdown text, as written in file `source`, that do not resolve, each with
    why (`#anchor` alone is a heading of `source`)."""
    broken = []
    for target in relative_links(text):
        path, _, fragment = target.partition("#")
        document = (source.parent / unquote(path)).resolve() if path else source
        if not document.is_relative_to(ROOT):
            broken.append(f"{target}: outside the repository")
        elif not document.exists():
            broken.append(f"{target}: no such file")
        elif fragment:
            if document.suffix != ".md":
                broken.append(f"{target}: an anchor in a file that is not Markdown")
            elif fragment not in anchors(document):
                broken.append(f"{target}: no heading makes the anchor #{fragment} in {document.relative_to(ROOT)}")
    return broken


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda document: str(document.relative_to(ROOT)))
def test_every_relative_link_resolves(document: Path) -> None:
    assert broken_links(document.read_text(), document) == []


def test_the_readme_is_a_front_door() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines: move a section to docs/"


def test_the_docs_show_the_reject_examples_the_tests_run() -> None:
    shown = re.search(
        r"<!-- reject examples: python -m tests.reject_examples -->\n(.*?)<!-- end of reject examples -->",
        (DOCS / "consumer.md").read_text(),
        re.S,
    )
    assert shown, "docs/consumer.md has no reject examples section"
    assert shown.group(1) == markdown_table(), "docs/consumer.md: paste `python -m tests.reject_examples` in"


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in relative_links(README.read_text())}
    assert {page.resolve() for page in DOCS.glob("*.md")} <= linked


@pytest.mark.parametrize(
    ("heading", "expected"),
    [
        ("Secured clusters (TLS, SASL)", "secured-clusters-tls-sasl"),
        ("The seed's commands, step by step", "the-seeds-commands-step-by-step"),
        ("What `make` installs", "what-make-installs"),
        (
            "On this machine: `scripts/kafka-local --brokers N` and `scripts/spark-local`",
            "on-this-machine-scriptskafka-local---brokers-n-and-scriptsspark-local",
        ),
        ("Stops, restarts and checkpoints", "stops-restarts-and-checkpoints"),
        ("[Totals](totals.md) database_v2", "totals-database_v2"),
    ],
)
def test_anchors_are_named_as_on_github(heading: str, expected: str) -> None:
    assert anchor(heading) == expected


def test_a_broken_link_is_reported() -> None:
    text = (
        "[ok](README.md#layout) [ok](docs/operations.md#dashboard) [here](#versions) [web](https://example.org/#x)\n"
        "[gone](docs/no-such-page.md) [heading](README.md#no-such-heading) [here](#nowhere) `[code](nowhere.md)`\n"
        "[up](../outside.md) [png](docs/dashboard.png#x)\n"
        "```\n[fenced](nowhere.md)\n```\n"
    )
    assert broken_links(text, README) == [
        "docs/no-such-page.md: no such file",
        "README.md#no-such-heading: no heading makes the anchor #no-such-heading in README.md",
        "#nowhere: no heading makes the anchor #nowhere in README.md",
        "../outside.md: outside the repository",
        "docs/dashboard.png#x: an anchor in a file that is not Markdown",
    ]

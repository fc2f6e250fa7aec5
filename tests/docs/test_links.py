"""Every relative link in README.md and docs/*.md points to a file that exists and, with a #fragment, to a
heading that file has (GitHub's anchors): the documentation is split over several files, and a link that
breaks when a section moves is found here, not by a reader."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```.*?^```$", flags=re.MULTILINE | re.DOTALL)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def anchors(document: Path) -> set[str]:
    """The ids GitHub gives a file's headings: lower case, punctuation dropped, spaces as hyphens, and
    ``-1``, ``-2`` ... on repeats."""
    seen: dict[str, int] = {}
    ids = set()
    for heading in re.findall(r"^#{1,6} (.+)$", FENCE.sub("", document.read_text()), flags=re.MULTILINE):
        text = re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()  # `_` stays, as in names
        slug = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        ids.add(slug if count == 0 else f"{slug}-{count}")
    return ids


def links(document: Path) -> list[str]:
    """Relative link targets outside code blocks (inline code spans are not links either)."""
    prose = re.sub(r"`[^`\n]*`", "", FENCE.sub("", document.read_text()))
    return [target for target in LINK.findall(prose) if not re.match(r"[a-z][a-z0-9+.-]*:", target)]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(REPO)))
def test_relative_links_resolve(document: Path) -> None:
    broken = []
    for target in links(document):
        path, _, fragment = target.partition("#")
        linked = (document.parent / path).resolve() if path else document
        if not linked.exists():
            broken.append(f"{target}: no file {os.path.relpath(linked, REPO)}")
        elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
            broken.append(f"{target}: no heading with the id #{fragment} in {os.path.relpath(linked, REPO)}")
    assert not broken, f"{document.relative_to(REPO)}: " + "; ".join(broken)


def test_anchors_are_githubs(tmp_path: Path) -> None:
    """The slug rule itself, on headings shaped like ours."""
    sample = tmp_path / "sample.md"
    sample.write_text(
        "# Redis: connections, failures and high availability\n## `async def` or plain `def`\n"
        "## Rolling deploys: what is guaranteed, and the limits\n## Retries\n## Retries\n```sh\n# not a heading\n```\n"
        "## `RELAY_TASK_MODULES` and `scripts/dev`\n"
    )
    assert anchors(sample) == {
        "redis-connections-failures-and-high-availability",
        "async-def-or-plain-def",
        "rolling-deploys-what-is-guaranteed-and-the-limits",
        "retries",
        "retries-1",
        "relay_task_modules-and-scriptsdev",
    }

"""Every example of the Python client and the CLI in the documentation runs as written against a real API:
the README's "The Python client" and "The CLI" sections, and docs/client.md, docs/cli.md and docs/workflows.md
whole."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.harness.processes import BIN

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DOCUMENTS = [README, REPO / "docs" / "client.md", REPO / "docs" / "cli.md", REPO / "docs" / "workflows.md"]


def examples(document: Path) -> list[tuple[str, str]]:
    text = document.read_text()
    if document == README:  # its other examples need a scripts/dev of their own or a project of yours
        text = text[text.index("\n## The Python client\n") : text.index("\n## Where to go next\n")]
    return re.findall(r"^```(python|sh)\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)


def params() -> list[object]:
    cases = []
    for document in DOCUMENTS:
        for n, (language, code) in enumerate(examples(document)):
            cases.append(pytest.param(language, code, id=f"{document.stem}-{language}-{n}"))
    return cases


def test_the_documents_have_examples() -> None:
    languages = [language for document in DOCUMENTS for language, _ in examples(document)]
    assert languages.count("python") >= 4
    assert languages.count("sh") >= 2


@pytest.mark.parametrize(("language", "code"), params())
def test_documented_example_runs(relay: str, language: str, code: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env |= {"RELAY_URL": relay, "PATH": f"{BIN}:{env.get('PATH', '')}"}
    argv = [sys.executable, "-c", code] if language == "python" else ["bash", "-euo", "pipefail", "-c", code]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr

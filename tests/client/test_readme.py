"""Every example in the README's "Python client" and "CLI" sections runs as written against a real API."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.harness.processes import BIN

README = Path(__file__).resolve().parents[2] / "README.md"


def examples() -> list[tuple[str, str]]:
    text = README.read_text()
    section = text[text.index("\n## Python client\n") : text.index("\n## Configuration\n")]
    return re.findall(r"^```(python|sh)\n(.*?)^```$", section, flags=re.MULTILINE | re.DOTALL)


def params() -> list[object]:
    cases = []
    for n, (language, code) in enumerate(examples()):
        cases.append(pytest.param(language, code, id=f"{language}-{n}"))
    return cases


def test_the_sections_have_examples() -> None:
    assert [language for language, _ in examples()].count("python") >= 4
    assert [language for language, _ in examples()].count("sh") >= 2


@pytest.mark.parametrize(("language", "code"), params())
def test_readme_example_runs(relay: str, language: str, code: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env |= {"RELAY_URL": relay, "PATH": f"{BIN}:{env.get('PATH', '')}"}
    argv = [sys.executable, "-c", code] if language == "python" else ["bash", "-euo", "pipefail", "-c", code]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr

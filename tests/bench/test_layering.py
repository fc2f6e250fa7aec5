"""The benchmarks stand on their own: no bench module imports the test suite, nor has a process it starts load
a module of it (``RELAY_TASK_MODULES``); the suite may import bench."""

from __future__ import annotations

import ast
import re
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
MODULE_OF_TESTS = re.compile(r"(?<![\w.])tests(?:\.[A-Za-z_]\w*)+")  # in a string: tests.support.tasks


def _names_of_tests(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append(node.module)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found += MODULE_OF_TESTS.findall(node.value)
    return [name for name in found if name == "tests" or name.startswith("tests.")]


def test_no_bench_module_imports_tests() -> None:
    offenders = {
        str(path.relative_to(BENCH)): names
        for path in sorted(BENCH.rglob("*.py"))
        if (names := _names_of_tests(ast.parse(path.read_text(), str(path))))
    }
    assert offenders == {}

"""Shared test helpers live in `testkit/`: benchmarks and the app never import `tests/`."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import APP_ROOT


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_bench_core_pages_and_testkit_import_nothing_from_tests():
    """No module outside tests/ imports tests (the helpers both need are in testkit/)."""
    offenders = {}
    for folder in ("bench", "core", "pages", "testkit"):
        for path in sorted((APP_ROOT / folder).rglob("*.py")):
            found = {m for m in _imported_modules(path) if m == "tests" or m.startswith("tests.")}
            if found:
                offenders[str(path.relative_to(APP_ROOT))] = sorted(found)
    assert offenders == {}


def test_the_check_sees_an_import_from_tests(tmp_path):
    """The scan above finds `from tests.x import y` and `import tests.x` (so it can fail)."""
    sample = tmp_path / "sample.py"
    sample.write_text("import tests.pg\nfrom tests.hostile import png_with_text\nfrom . import x\n")
    assert _imported_modules(sample) >= {"tests.pg", "tests.hostile"}

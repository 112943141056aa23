"""The shape of the code, checked by reading it: where Streamlit may be imported, which way
imports run (pages → ui → core), no cycles, small pages, and one backend contract."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from tests.conftest import APP_ROOT

PAGE_LINES, PAGE_FUNCTION_LINES, CORE_FUNCTION_LINES = 250, 60, 80
LONG_MARK = "Why this is long:"  # the comment a longer core function carries


def _files(folder: str) -> list[Path]:
    return sorted(
        p
        for p in (APP_ROOT / folder).rglob("*.py")
        if "migrations" not in p.relative_to(APP_ROOT).parts
    )


def _module(path: Path) -> str:
    parts = list(path.relative_to(APP_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside functions, but not the imports
    under `if TYPE_CHECKING:` (they never run)."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for statement in node.body
        for inner in ast.walk(statement)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:  # `from core.history import blobs` imports a module
                inner = f"{node.module}.{alias.name}"
                found.add(inner if _is_ours(inner) else node.module)
    return found


def _is_ours(module: str) -> bool:
    """Whether `module` is a module or package of this repository."""
    path = APP_ROOT.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _top(name: str) -> str:
    return name.split(".", 1)[0]


def test_only_the_service_imports_streamlit_in_core():
    """In core, only core/service.py (the st.cache_resource accessors) imports streamlit."""
    importers = [
        str(path.relative_to(APP_ROOT))
        for path in _files("core")
        if any(_top(name) == "streamlit" for name in _imports(path))
    ]
    assert importers == ["core/service.py"]


def test_the_check_sees_a_streamlit_import_inside_a_function(tmp_path):
    """The same reading finds an import hidden in a function (so the test above can fail)."""
    path = tmp_path / "sneaky.py"
    path.write_text("def f():\n    from streamlit import session_state\n")
    assert "streamlit" in _imports(path)


def test_core_imports_nothing_from_pages_or_ui():
    """Imports run one way: pages → ui → core; core never reaches up."""
    upward = {
        str(path.relative_to(APP_ROOT)): sorted(
            name for name in _imports(path) if _top(name) in ("pages", "ui")
        )
        for path in _files("core")
    }
    assert {k: v for k, v in upward.items() if v} == {}
    ui_to_pages = {
        str(path.relative_to(APP_ROOT))
        for path in _files("ui")
        if any(_top(name) == "pages" for name in _imports(path))
    }
    assert ui_to_pages == set()


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One import cycle through each module that is on one (a depth-first walk)."""

    def cycle_from(start: str) -> list[str] | None:
        stack, seen = [(start, [start])], set()
        while stack:
            node, trail = stack.pop()
            for nxt in sorted(graph[node]):
                if nxt == start:
                    return [*trail, start]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*trail, nxt]))
        return None

    return [cycle for name in sorted(graph) if (cycle := cycle_from(name))]


def test_no_import_cycles_among_core_and_ui():
    """No module of core or ui imports itself through others (lazy imports included)."""
    modules = {_module(path): path for folder in ("core", "ui") for path in _files(folder)}
    graph = {
        name: {other for other in _imports(path) if other in modules and other != name}
        for name, path in modules.items()
    }
    assert len(graph) > 50 and sum(map(len, graph.values())) > 100  # the reading found them
    assert _cycles(graph) == []


def test_the_cycle_check_finds_a_cycle():
    """The same walk reports a → b → c → a (so the test above can fail)."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})[0] == ["a", "b", "c", "a"]


def _functions(path: Path):
    source = path.read_text()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            body = source.splitlines()[node.lineno - 1 : node.end_lineno]
            yield node.name, len(body), "\n".join(body)


def test_pages_are_thin():
    """No page module over 250 lines, no page function over 60."""
    long_pages = {
        p.name: n for p in _files("pages") if (n := len(p.read_text().splitlines())) > PAGE_LINES
    }
    long_functions = {
        f"{p.name}:{name}": n
        for p in _files("pages")
        for name, n, _ in _functions(p)
        if n > PAGE_FUNCTION_LINES
    }
    assert (long_pages, long_functions) == ({}, {})


def test_long_core_functions_say_why():
    """A core function over 80 lines carries a comment saying why it must be long."""
    unexplained = {
        f"{p.relative_to(APP_ROOT)}:{name}": n
        for p in _files("core")
        for name, n, text in _functions(p)
        if n > CORE_FUNCTION_LINES and LONG_MARK not in text
    }
    assert unexplained == {}


def test_nothing_probes_a_backend_for_attributes():
    """Pages, ui and core ask backends only what the Backend protocol declares."""
    probes = []
    for folder in ("core", "ui", "pages"):
        for path in _files(folder):
            for node in ast.walk(ast.parse(path.read_text())):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Name)
                    and node.func.id in ("getattr", "hasattr")
                    and node.args
                    and "backend" in ast.unparse(node.args[0]).lower()
                ):
                    probes.append(f"{path.relative_to(APP_ROOT)}:{node.lineno}")
    assert probes == []


def _contract() -> dict[str, object]:
    from core.generation import Backend

    names = {n for n in vars(Backend) if not n.startswith("_")} | set(Backend.__annotations__)
    return {name: getattr(Backend, name, None) for name in sorted(names)}


@pytest.mark.parametrize("kind", ["local", "remote"])
def test_both_backends_implement_the_whole_contract(kind):
    """Every member of the Backend protocol exists on both backends, methods with the same
    parameters, so no caller has to probe."""
    from core.local import LocalBackend
    from core.remote import RemoteBackend

    backend = (
        LocalBackend(model="demo") if kind == "local" else RemoteBackend(url="http://x", model="m")
    )
    missing, differing = [], []
    for name, declared in _contract().items():
        if not hasattr(backend, name):
            missing.append(name)
        elif inspect.isfunction(declared):
            want = list(inspect.signature(declared).parameters)[1:]
            have = list(inspect.signature(getattr(backend, name)).parameters)
            if want != have:
                differing.append((name, want, have))
    assert (missing, differing) == ([], [])
    assert backend.state in {"not loaded", "nothing to load"}

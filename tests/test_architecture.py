"""The shape rules the architecture keeps (besides the import layers, which lint-imports checks):
short signatures, the search package's core modules short enough to read, collaborators reached
through typed attributes rather than ``getattr``."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("foundation", "catalogues", "attributes", "detector", "appearance", "indexer", "search", "evaluation")
PACKAGES += ("webui", "cli")
MAX_ARGS = 6
MAX_LINES = {"search/engine.py": 350, "search/index.py": 350, "search/milvus.py": 350}


def _sources():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield path, ast.parse(path.read_text(encoding="utf-8"))


def test_no_function_takes_more_than_six_arguments():
    long = []
    for path, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
                if names and names[0] in ("self", "cls"):
                    names = names[1:]
                if len(names) > MAX_ARGS:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}({len(names)})")
    assert not long, "group these arguments into a settings dataclass: " + ", ".join(long)


def test_the_search_core_stays_short():
    for name, limit in MAX_LINES.items():
        lines = (ROOT / name).read_text(encoding="utf-8").count("\n")
        assert lines < limit, f"{name} has {lines} lines; split it (the limit is {limit})"


def test_the_engine_and_the_web_layer_reach_no_collaborator_through_getattr():
    found = []
    for path, tree in _sources():
        if path.parent.name not in ("search", "webui", "indexer"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr":
                target = node.args[0]
                if not (isinstance(target, ast.Name) and target.id in ("self", "exc", "server")):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, "use a typed attribute or protocol instead of getattr: " + ", ".join(found)

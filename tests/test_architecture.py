"""The layering that ARCHITECTURE.md describes: no import cycle between modules (imports inside
functions count too), and the lower layers never import the upper ones."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: import path prefix -> folder (pyproject's package-dir mapping).
PACKAGES = {"tts.cli": ROOT / "cli", "tts.engines": ROOT / "engines", "tts.plugins": ROOT / "plugins",
            "tts": ROOT / "tts"}
#: layer -> prefixes it must never import.
FORBIDDEN = {
    "tts.models": ("tts.engines", "tts.plugins", "tts.server", "tts.cli", "tts.synthesizer", "tts.voice",
                   "tts.train"),
    "tts.text": ("tts.models", "tts.engines", "tts.plugins", "tts.server", "tts.cli", "tts.synthesizer"),
    "tts.plugins": ("tts.engines", "tts.server", "tts.cli", "tts.synthesizer", "tts.voice"),
    "tts.engines": ("tts.server", "tts.cli", "tts.synthesizer", "tts.voice", "tts.train"),
    "tts.synthesizer": ("tts.server", "tts.cli"),
    "tts.server": ("tts.cli", "tts.plugins", "tts.train"),
}


def _modules() -> dict[str, Path]:
    mods = {}
    for prefix, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([prefix, *parts])
            if prefix == "tts" and parts and parts[0] in ("cli", "engines", "plugins"):
                continue
            mods.setdefault(name, path)
    return mods


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")
                up = up[:len(up) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {name: _imports(name, path, known) for name, path in mods.items()}


def test_no_import_cycle():
    graph = _graph()
    # packages import their submodules by design (``__init__`` re-exports); a cycle through a
    # package's own ``__init__`` from its submodule is not a layering cycle
    def edges(m):
        return {d for d in graph[m] if not m.startswith(d + ".")}

    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(edges(m)):
            if state.get(d) == 1:
                cycle = stack[stack.index(d):] + [d]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_lower_layers_do_not_import_upper_ones():
    bad = []
    for name, deps in _graph().items():
        for layer, forbidden in FORBIDDEN.items():
            if name == layer or name.startswith(layer + "."):
                bad += [f"{name} imports {d}" for d in deps if any(d == f or d.startswith(f + ".") for f in forbidden)]
    assert not bad, "\n".join(sorted(bad))


def test_no_library_file_over_800_lines():
    long = [f"{p.relative_to(ROOT)}: {n}" for p in _modules().values()
            if "proto_gen" not in p.parts and (n := len(p.read_text(encoding="utf-8").splitlines())) > 800]
    assert not long, long

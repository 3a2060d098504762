"""The architecture, enforced: imports flow one way and no module imports
itself back through another. Lazy imports inside functions count too: a
cycle hidden in a function is still a cycle."""
from __future__ import annotations

import ast
from pathlib import Path

import autopilot

ROOT = Path(autopilot.__file__).parent

# Lowest first. A unit (a top-level module or sub-package of autopilot) may
# import units of its own layer only when it is the same unit, and any unit
# of a lower layer. Units on one line are siblings that know nothing of
# each other.
LAYERS = [
    ["version", "rundir", "config", "stats", "metrics"],
    ["schemas"],
    ["data"],
    ["rundata"],
    ["models"],
    ["train"],
    ["export"],
    ["doctor", "compress"],
    ["search"],
    ["fusion", "finalists"],
    ["final"],
    ["registry"],
    ["runtime"],
    ["monitor"],
    ["serve", "predict", "report"],
    ["retrain"],
    ["runner"],
    ["cli"],
    ["__main__", "__init__"],
]
LAYER_OF = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def module_name(path: Path) -> str:
    parts = ["autopilot", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in ROOT.rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The autopilot modules a module imports, anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # `from .pkg import sub` imports the sub-module when there is one.
            targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in known else stem for a in node.names]
        else:
            continue
        found |= {t for t in targets if t == "autopilot" or t.startswith("autopilot.")}
    return found - {name}


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    """A cycle of modules, or None (depth-first search with colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(g.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (cycle := visit(n)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(g):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def test_every_unit_has_a_layer():
    missing = sorted({unit(m) for m in modules()} - set(LAYER_OF))
    assert not missing, f"new top-level module(s) {missing}: place them in LAYERS in tests/test_layers.py"


def test_no_import_cycle():
    # The package root imports lazily (autopilot.run -> runner); it is the top.
    g = {m: {n for n in deps if n != "autopilot"} for m, deps in graph().items() if m != "autopilot"}
    cycle = find_cycle(g)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_imports_flow_down_the_layers():
    wrong = []
    for m, deps in graph().items():
        for d in deps:
            a, b = unit(m), unit(d)
            if a == b or a == "__init__" and b == "runner":
                continue
            if LAYER_OF[b] >= LAYER_OF[a]:
                wrong.append(f"{m} imports {d} ({a} is not above {b})")
    assert not wrong, "layering broken:\n" + "\n".join(sorted(wrong))


def test_the_checker_sees_a_planted_cycle():
    g = {"autopilot.a": {"autopilot.b"}, "autopilot.b": {"autopilot.c"}, "autopilot.c": {"autopilot.a"}}
    assert find_cycle(g) == ["autopilot.a", "autopilot.b", "autopilot.c", "autopilot.a"]
    assert find_cycle({"autopilot.a": {"autopilot.b"}, "autopilot.b": set()}) is None

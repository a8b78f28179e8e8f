"""The package layout: four layers (core, runtime, workflows, front ends; ``emseg/__init__.py`` describes them),
every module importing only from the packages this table allows, at its top, and no import cycles."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "emseg"

# Packages in order: a package may import itself and the packages before it in its layer, and any lower layer.
LAYERS = {
    "base": ["errors", "emseg"],
    "core": ["io", "visualize", "data", "losses", "transforms", "networks", "segmentation", "evaluation"],
    "runtime": ["engine"],
    "workflows": ["inference", "blockwise", "bundle", "tuning", "finetune"],
    "front ends": ["cli", "napari"],
}
ORDER = [package for packages in LAYERS.values() for package in packages]
# Inside the engine, compute never reaches for record-keeping.
ENGINE_COMPUTE = {"allocator", "averaging", "distributed", "feed", "precision", "progress", "semi", "trained", "tta", "windows"}
ENGINE_RECORDS = {"paths", "offline", "runs", "tracking", "registry", "handlers"}
# The one import made by name at run time: the command imports only the group that runs (fast --help).
LAZY = {"emseg.cli": "importlib.import_module(module)"}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(module: str) -> str:
    """``emseg.engine.runs`` -> ``engine``; ``emseg`` -> ``emseg``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def internal_imports(tree: ast.Module, modules: set[str]) -> list[tuple[ast.AST, str]]:
    """(node, emseg module) for each import of an emseg module anywhere in ``tree``; ``from pkg import sub``
    counts as importing ``pkg.sub`` when that is a module."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node, alias.name) for alias in node.names if alias.name.split(".")[0] == "emseg"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "emseg":
            subs = {f"{node.module}.{alias.name}" for alias in node.names} & modules
            found += [(node, sub) for sub in sorted(subs)]
            if len(subs) < len(node.names):
                found.append((node, node.module))
    return found


FILES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
TREES = {name: ast.parse(path.read_text()) for name, path in FILES.items()}


def test_every_package_has_a_layer():
    assert {package_of(name) for name in FILES} <= set(ORDER)


def test_no_module_imports_up():
    wrong = []
    for name, path in FILES.items():
        own = package_of(name)
        for node, target in internal_imports(TREES[name], set(FILES)):
            other = package_of(target)
            if other != own and ORDER.index(other) > ORDER.index(own):
                wrong.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}: {own} imports {target}")
            if own == other == "engine":
                mine, theirs = name.split(".")[-1], target.split(".")[-1]
                if mine in ENGINE_COMPUTE and theirs in ENGINE_RECORDS:
                    wrong.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}: engine compute imports {target}")
    assert not wrong, "imports against the layer table:\n" + "\n".join(wrong)


def test_engine_modules_are_sorted_into_compute_and_records():
    engine = {name.split(".")[-1] for name in FILES if name.startswith("emseg.engine.")}
    assert engine == ENGINE_COMPUTE | ENGINE_RECORDS and not ENGINE_COMPUTE & ENGINE_RECORDS


def test_imports_of_emseg_modules_sit_at_the_top():
    nested = []
    for name, path in FILES.items():
        top = {id(node) for node in TREES[name].body}
        for node, target in internal_imports(TREES[name], set(FILES)):
            if id(node) not in top:
                nested.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}: imports {target} inside a function")
        if name in LAZY:
            assert LAZY[name] in path.read_text()
    assert not nested, "\n".join(nested)


def test_no_import_cycles():
    graph = {name: {t for _, t in internal_imports(TREES[name], set(FILES)) if t in FILES} - {name}
             for name, path in FILES.items()}
    cycles = []

    def visit(name: str, trail: list[str]) -> None:
        for target in graph[name]:
            if target in trail:
                cycles.append(trail[trail.index(target):] + [target])
            elif target not in done:
                visit(target, trail + [target])
        done.add(name)

    done: set[str] = set()
    for name in sorted(graph):
        if name not in done:
            visit(name, [name])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)

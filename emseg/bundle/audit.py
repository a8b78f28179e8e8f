"""What a bundle's configs would run: every ``$`` expression and ``_target_`` checked against an allow list.

Bundle configs are code: MONAI evaluates every ``"$..."`` value as Python and calls every ``_target_``. A
packed bundle from another lab should only call MONAI, torch, numpy, tifffile, Ignite and emseg (and
``os.path`` for file names); :func:`unlisted_code` lists whatever else its configs contain (``os.system``,
``__import__``, ``open``, ``eval``, ``subprocess`` ...), so ``emseg bundle verify`` can refuse it.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from pathlib import Path

ALLOWED_MODULES = ("monai", "torch", "numpy", "np", "tifffile", "ignite", "emseg")
OS_ALLOWED = ("os.path", "os.makedirs", "os.sep")  # `import os` is allowed, but only these uses of it
SAFE_BUILTINS = {"len", "list", "range", "str", "int", "float", "bool", "dict", "tuple", "set", "max", "min", "sum",
                 "abs", "round", "zip", "enumerate", "sorted", "isinstance", "any", "all", "None", "True", "False",
                 "ValueError", "FileExistsError", "FileNotFoundError"}
_REFERENCE = re.compile(r"@[\w#:]+")


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


def _module_allowed(name: str) -> bool:
    root = name.split(".")[0]
    if root == "os":
        return name == "os" or name.startswith(OS_ALLOWED)
    return root in ALLOWED_MODULES


def expression_problems(text: str) -> list[str]:
    """Why the ``$`` expression ``text`` (without the ``$``) is not on the allow list; empty when it is."""
    source = _REFERENCE.sub("_ref", text.strip())
    try:
        tree = ast.parse(source, mode="exec" if source.startswith(("import ", "from ")) else "eval")
    except SyntaxError as err:
        return [f"not a Python expression ({err.msg})"]
    local = {"_ref"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Lambda):
            local |= {a.arg for a in node.args.args}
        elif isinstance(node, ast.comprehension):
            local |= {n.id for n in ast.walk(node.target) if isinstance(n, ast.Name)}
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("__"):
            problems.append(f"uses {node.attr}")
        elif isinstance(node, ast.Import):
            problems += [f"imports {a.name}" for a in node.names if not _module_allowed(a.name)]
        elif isinstance(node, ast.ImportFrom):
            if not _module_allowed(node.module or ""):
                problems.append(f"imports from {node.module}")
        elif isinstance(node, (ast.Attribute, ast.Name)) and isinstance(getattr(node, "ctx", None), ast.Load):
            name = _dotted(node)
            if name is None:  # a method of a computed value: checked where that value comes from
                continue
            root = name.split(".")[0]
            if root in local or (isinstance(node, ast.Name) and root in SAFE_BUILTINS):
                continue
            if root.startswith("__"):
                problems.append(f"uses {root}")
            elif isinstance(node, ast.Name) and root not in ALLOWED_MODULES and root != "os":
                problems.append(f"uses {root}")
            elif root == "os" and isinstance(node, ast.Attribute) and not _module_allowed(name):
                problems.append(f"uses {name}")
    return sorted(set(problems))


def target_problems(target: str) -> list[str]:
    """Why a ``_target_`` is not on the allow list: dotted names must be in an allowed module; short names must
    be MONAI components (as MONAI's locator resolves them)."""
    if target.startswith("$"):
        return expression_problems(target[1:])
    if "." in target:
        return [] if target.split(".")[0] in ALLOWED_MODULES and target.split(".")[0] != "np" else [f"calls {target}"]
    from monai.bundle.config_item import ComponentLocator

    modules = ComponentLocator().get_component_module_name(target)
    modules = [modules] if isinstance(modules, str) else list(modules or [])
    return [] if modules and all(m.startswith("monai.") for m in modules) else [f"calls {target}"]


def config_code(config, where: str = "") -> Iterator[tuple[str, str]]:
    """(id, code) for every ``$`` expression, ``%`` macro and ``_target_`` in a config."""
    if isinstance(config, dict):
        for key, value in config.items():
            here = f"{where}#{key}" if where else str(key)
            if key == "_target_" and isinstance(value, str):
                yield here, value
            else:
                yield from config_code(value, here)
    elif isinstance(config, list):
        for index, value in enumerate(config):
            yield from config_code(value, f"{where}#{index}")
    elif isinstance(config, str) and config.startswith(("$", "%")):
        yield where, config


def unlisted_code(config_files) -> list[str]:
    """``file: id: code (why)`` for every piece of code in ``config_files`` that is not on the allow list."""
    found = []
    for path in config_files:
        config = json.loads(Path(path).read_text())
        for where, code in config_code(config):
            if where.endswith("_target_"):
                problems = target_problems(code)
            elif code.startswith("%"):
                problems = ["a macro that loads another file"]
            else:
                problems = expression_problems(code[1:])
            if problems:
                found.append(f"{Path(path).name}: {where}: {code[:120]} ({'; '.join(problems)})")
    return found

"""Every `python -m monai.bundle run` example in the READMEs names config files that exist and overrides keys
the config has (an override of a key the config lacks would be added silently and change nothing)."""

from __future__ import annotations

import ast
import re
import shlex

import pytest
from conftest import REPO_ROOT

DOCS = [REPO_ROOT / "README.md", REPO_ROOT / "bundles" / "README.md", *sorted(REPO_ROOT.glob("bundles/*/docs/README.md"))]


def examples() -> list[tuple[str, str]]:
    """(document, command) for each bundle-run example, continuation lines joined."""
    found = []
    for doc in DOCS:
        text = doc.read_text().replace("\\\n", " ")
        for line in text.splitlines():
            match = re.search(r"python -m monai\.bundle run .*", line)
            if match:
                found.append((doc.relative_to(REPO_ROOT).as_posix(), match.group(0)))
    return found


def parse(command: str) -> tuple[list[str], dict]:
    """Config files and overrides of a bundle-run command, values read as MONAI's CLI (Fire) reads them."""
    words = shlex.split(command)[4:]
    if words and not words[0].startswith("--"):
        words = words[1:]  # the workflow name, e.g. training
    args = dict(zip(words[::2], words[1::2]))
    files = args.pop("--config_file")
    files = ast.literal_eval(files) if files.startswith("[") else [files]
    values = {}
    for key, value in args.items():
        try:
            values[key[2:]] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            values[key[2:]] = value
    return files, values


EXAMPLES = [e for e in examples() if (REPO_ROOT / parse(e[1])[0][0]).is_file()]


def test_the_docs_have_examples():
    assert len(EXAMPLES) >= 20 and any("#" in command.split("--config_file")[1] for _, command in EXAMPLES)


@pytest.mark.parametrize(("doc", "command"), EXAMPLES, ids=[f"{d}:{i}" for i, (d, _) in enumerate(EXAMPLES)])
def test_example_overrides_keys_the_config_has(doc, command):
    from monai.bundle import ConfigParser

    files, values = parse(command)
    parser = ConfigParser()
    parser.read_config([str(REPO_ROOT / f) for f in files])
    missing = [key for key in values if key not in parser]
    assert not missing, f"{doc}: {command}\noverrides keys the config lacks: {missing}"

"""Every `python -m monai.bundle run` example in the READMEs and the documentation (docs/) names config files that
exist and overrides keys the config has (an override of a key the config lacks would be added silently and change
nothing); every `emseg` example names a command the `emseg` parser has, with flags it knows."""

from __future__ import annotations

import argparse
import ast
import re
import shlex

import pytest
from conftest import REPO_ROOT

DOCS = [REPO_ROOT / "README.md", REPO_ROOT / "bundles" / "README.md", *sorted(REPO_ROOT.glob("bundles/*/docs/README.md")),
        *sorted(REPO_ROOT.glob("docs/**/*.md"))]


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


def without_substitutions(text: str) -> str:
    """``text`` with each shell substitution `$(...)`, nested parentheses included, replaced by `X`."""
    while (start := text.find("$(")) >= 0:
        depth, end = 0, start + 1
        for end in range(start + 1, len(text)):
            depth += {"(": 1, ")": -1}.get(text[end], 0)
            if depth == 0:
                break
        text = text[:start] + "X" + text[end + 1:]
    return text


def emseg_examples() -> list[tuple[str, str]]:
    """(document, command) for each `emseg ...` example: a line of a code block (fenced, or indented by 4 spaces)
    that starts with it, or an inline code span that does; continuation lines joined, shell substitutions `$(...)`
    replaced by a word, anything after `&&`, `|` or `;` left out (another command)."""
    found = []
    for doc in DOCS:
        text = without_substitutions(doc.read_text().replace("\\\n", " "))
        candidates, fenced = [], False
        for line in text.splitlines():
            if line.lstrip().startswith("```"):
                fenced = not fenced
            elif fenced or line.startswith("    "):
                candidates.append(line.strip())
        candidates += re.findall(r"`(emseg [^`]+)`", text)
        for candidate in candidates:
            for command in re.split(r"&&|\|\||;|\|", candidate):
                command = command.strip()
                if command.startswith("emseg "):
                    found.append((doc.relative_to(REPO_ROOT).as_posix(), command))
    return sorted(set(found), key=found.index)


EMSEG_EXAMPLES = emseg_examples()


def emseg_words(command: str) -> list[str]:
    """The words of an `emseg` example after `emseg`, without a trailing comment."""
    return shlex.split(command, comments=True)[1:]


def subcommand(words: list[str]) -> tuple[list[str], argparse.ArgumentParser]:
    """The command path an example names (e.g. ['bundle', 'pack']) and the parser of its last part; fails on a
    command or subcommand the `emseg` parser does not have."""
    from emseg.cli import build_parser

    parser, path = build_parser(), []
    if words and words[0] in ("--help", "-h", "--version"):
        return path, parser
    while True:
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not actions:
            return path, parser
        word = words[len(path)] if len(path) < len(words) else None
        assert word in actions[0].choices, (f"emseg {' '.join(path)}: no subcommand {word!r} "
                                            f"(has {sorted(actions[0].choices)})")
        path.append(word)
        parser = actions[0].choices[word]


def flags(words: list[str]) -> list[str]:
    """The long options of an example (`--run-name`, not its value)."""
    return [w.split("=")[0] for w in words if w.startswith("--")]


def test_the_docs_have_emseg_examples():
    commands = {" ".join(subcommand(emseg_words(c))[0]) for _, c in EMSEG_EXAMPLES}
    assert len(EMSEG_EXAMPLES) >= 20 and {"data download", "evaluate", "segment", "bundle pack", "bundle verify"} <= commands


@pytest.mark.parametrize(("doc", "command"), EMSEG_EXAMPLES, ids=[f"{d}:{i}" for i, (d, _) in enumerate(EMSEG_EXAMPLES)])
def test_emseg_example_names_a_command_and_flags_the_parser_has(doc, command):
    """The command path must exist and each flag must be one of that command's options, as the parser spells it
    (with dashes)."""
    words = emseg_words(command)
    _, parser = subcommand(words)
    known = {option for action in parser._actions for option in action.option_strings}
    unknown = [flag for flag in flags(words) if flag not in known]
    assert not unknown, f"{doc}: {command}\nflags the parser does not know: {unknown}"

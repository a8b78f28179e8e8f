"""The ``emseg`` command as a whole: one flag style, the old spelling still understood with a warning, and a
command group's code imported only when that group runs."""

from __future__ import annotations

import argparse
import subprocess
import sys

from emseg.cli import GROUPS, build_parser, dashed


def options(parser: argparse.ArgumentParser):
    for action in parser._actions:
        yield from action.option_strings
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from options(sub)


def test_every_option_is_spelled_with_dashes():
    every = set(options(build_parser()))
    assert {"--run-name", "--dataset-dir", "--prediction-key", "--dry-run"} <= every
    assert not [option for option in every if "_" in option]


def test_every_group_is_reachable():
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(commands) == set(GROUPS)


def test_old_underscore_spelling_is_read_with_a_warning(capsys):
    assert dashed(["bundle", "promote", "b", "--run_name", "r", "--set", "dataset_dir=x", "--dataset_dir=d"]) == [
        "bundle", "promote", "b", "--run-name", "r", "--set", "dataset_dir=x", "--dataset-dir=d"]
    assert capsys.readouterr().err.splitlines() == ["emseg: warning: --run_name is spelled --run-name",
                                                    "emseg: warning: --dataset_dir is spelled --dataset-dir"]


def test_old_spelling_through_the_command(tmp_path):
    done = subprocess.run([sys.executable, "-m", "emseg.cli", "bundle", "promote", str(tmp_path), "--run_name", "gone"],
                          capture_output=True, text=True, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and lines[0] == "emseg: warning: --run_name is spelled --run-name"
    assert lines[-1].startswith("emseg: error:") and "gone" in lines[-1]


def test_help_imports_no_group():
    code = ("import sys\nfrom emseg.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith(('torch', 'monai', 'emseg.cli.'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"

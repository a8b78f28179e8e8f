"""The ``emseg`` command, one module per command group, each a thin layer over the library (front end).

    emseg data download isbi2012 --root DIR
    emseg data to-zarr STACK OUT.zarr [--spacing Z Y X] [--chunk 256] [--levels 3] [--overwrite]
    emseg evaluate PRED GT [--output DIR]          # probabilities (threshold sweep) or a label image (as it is)
    emseg evaluate PRED STROKES --painted          # sparse labels: 0 = not painted, 1 = membrane, 2 = interior
    emseg segment PROBS OUT.tif [--threshold 0.5 --seeds distance --h 2 --min-size 50 --mode 3d]
    emseg objects LABELS OUT.csv [--image RAW] [--spacing Z Y X] [--per-slice]
    emseg tune-postprocess bundles/unet [--trials 60] [--run-name NAME]
    emseg augment preview --bundle bundles/unet --n 8 --out aug.png [--save DIR --count 1000]
    emseg bundle render [bundles/unet ...] [--check]
    emseg bundle promote bundles/unet --run-name unet-20261122-101500-0a1b2c3d
    emseg bundle pack bundles/unet [--run-name NAME] [--output DIR]
    emseg bundle verify unet_v0.2.0.zip
    emseg bundle export-bioimageio bundles/unet unet.bioimageio.zip [--image STACK] [--test]
    emseg runs sync bundles/unet/runs/unet-20261122-101500-0a1b2c3d [...]

Options are spelled with dashes (``--run-name``); config keys given with ``--set KEY=VALUE`` keep their bundle
spelling (``dataset_dir``). A group's module (and the part of the library it runs) is imported only when that
group runs, so ``emseg --help`` answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from emseg import __version__
from emseg.errors import report

# command -> (module of its group, one-line help); each module has add_parsers(commands)
GROUPS = {
    "data": ("emseg.cli.data", "data sets: download, convert to OME-Zarr"),
    "evaluate": ("emseg.cli.evaluate", "score a probability stack against a label stack (ISBI scores)"),
    "segment": ("emseg.cli.cells", "cells (uint32 labels) from cell-interior probabilities"),
    "objects": ("emseg.cli.cells", "a CSV table of the objects of a label stack (regionprops)"),
    "tune-postprocess": ("emseg.cli.cells", "tune the instance parameters on the validation split (Optuna), "
                                            "write them to the bundle, log to MLflow"),
    "augment": ("emseg.cli.augment", "augmented training data"),
    "bundle": ("emseg.cli.bundle", "render, promote, pack, verify and export bundles"),
    "runs": ("emseg.cli.runs", "training runs: upload what a run logged while its MLflow server was away"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """Argument parser of the ``emseg`` command: every group's options, or (``only``) just that command's group
    (``""``: none), the others listed by name and help."""
    parser = argparse.ArgumentParser(prog="emseg", description="EM segmentation with MONAI bundles")
    parser.add_argument("--version", action="version", version=f"emseg {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    if only is None:
        wanted = {module for module, _ in GROUPS.values()}
    else:
        wanted = {GROUPS[only][0]} if only in GROUPS else set()
    for module in dict.fromkeys(module for module, _ in GROUPS.values()):
        if module in wanted:
            importlib.import_module(module).add_parsers(commands)
    for command, (module, help_text) in GROUPS.items():
        if module not in wanted:
            commands.add_parser(command, help=help_text)
    return parser


def dashed(argv: Sequence[str]) -> list[str]:
    """Options in the one spelling the command knows: ``--run_name`` (the old spelling) becomes ``--run-name``,
    with a warning; values (``--set dataset_dir=...``) are left as they are."""
    out = []
    for word in argv:
        name, sep, value = word.partition("=")
        if name.startswith("--") and "_" in name:
            fixed = name.replace("_", "-")
            print(f"emseg: warning: {name} is spelled {fixed}", file=sys.stderr)
            word = fixed + sep + value
        out.append(word)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``emseg`` console command."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    argv = dashed(sys.argv[1:] if argv is None else argv)
    command = next((word for word in argv if not word.startswith("-")), None)
    args = build_parser(command if command in GROUPS else "").parse_args(argv)
    try:
        return args.func(args)
    except Exception as err:  # one clear line for the user, the traceback in a file (or EMSEG_TRACEBACK=1)
        report(type(err), err, err.__traceback__)
        return 1

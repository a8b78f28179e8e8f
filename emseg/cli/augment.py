"""``emseg augment preview``: what a bundle's augmentation makes of its training data, as a grid or as pairs."""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from emseg.bundle.preview import augmented_pairs, preview_grid, save_pairs
from emseg.cli import GROUPS
from emseg.io.files import replace_atomically
from emseg.io.safety import check_new_files


def run_augment_preview(args: argparse.Namespace) -> int:
    if not args.out and not args.save:
        raise ValueError("give --out PNG for a preview grid and/or --save DIR to write augmented pairs")
    overrides = {"download": False}
    if args.dataset_dir:
        overrides["dataset_dir"] = str(Path(args.dataset_dir).resolve())
    if args.augmentation:
        overrides["augmentation"] = args.augmentation
    if args.feed:
        overrides["feed"] = args.feed
    if args.out:
        check_new_files([args.out], args.overwrite)
        grid = preview_grid(list(augmented_pairs(args.bundle, args.n, args.seed, **overrides)), args.columns)
        replace_atomically(args.out, lambda tmp: Image.fromarray(grid).save(tmp, format="PNG"))
        print(f"wrote {args.out}: {args.n} augmented pairs, {grid.shape[1]}x{grid.shape[0]} pixels")
    if args.save:
        count = save_pairs(augmented_pairs(args.bundle, args.count, args.seed, **overrides), args.save, args.overwrite)
        print(f"wrote {count} augmented pairs to {args.save}/images and {args.save}/labels")
    return 0


def add_parsers(commands) -> None:
    augment = commands.add_parser("augment", help=GROUPS["augment"][1]).add_subparsers(dest="augment_command",
                                                                                        required=True)
    preview = augment.add_parser("preview", help="grid of augmented image/label pairs, or many pairs as PNG")
    preview.add_argument("--bundle", default="bundles/unet", help="bundle folder whose train.json to use")
    preview.add_argument("--n", type=int, default=8, help="pairs in the grid")
    preview.add_argument("--columns", type=int, default=4)
    preview.add_argument("--out", default=None, help="PNG file for the grid")
    preview.add_argument("--save", default=None, help="folder to write augmented pairs to (images/, labels/)")
    preview.add_argument("--count", type=int, default=1000, help="pairs to write with --save")
    preview.add_argument("--augmentation", default=None, help="preset name instead of the bundle's")
    preview.add_argument("--feed", default=None, choices=["loader", "device"],
                         help="the patches of this feed (the bundle key feed) instead of the DataLoader's")
    preview.add_argument("--dataset-dir", default=None, help="data folder instead of the bundle's dataset_dir")
    preview.add_argument("--seed", type=int, default=0)
    preview.add_argument("--overwrite", action="store_true", help="replace an existing --out file or saved pairs")
    preview.set_defaults(func=run_augment_preview)

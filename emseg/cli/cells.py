"""``emseg segment``, ``emseg objects``, ``emseg tune-postprocess``: cells from probabilities, their table, and
tuning the parameters that make them."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from emseg.bundle.render import read_recipe
from emseg.cli import GROUPS
from emseg.cli.options import set_values
from emseg.io import read_volume, volume_spacing
from emseg.segmentation import InstanceParams, object_table, write_object_table
from emseg.segmentation.instances import MODES, SEEDS, segment_file
from emseg.tuning import (
    SCORES,
    best_instance_params,
    challenge_baseline,
    log_study,
    save_to_bundle,
    tune_instances,
    validation_probabilities,
)


def instance_params(args: argparse.Namespace) -> InstanceParams:
    """The parameters from --params (a JSON file or a bundle file), each option given overriding it."""
    values = {}
    if args.params:
        path = Path(args.params)
        try:
            values = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: not a readable JSON file of instance parameters ({err})") from None
        if "instances" in values:  # a bundle's recipe or inference config holds them under "instances"
            values = values["instances"]
        elif "bundle_name" in values:
            raise ValueError(f"{path}: a bundle file without instance parameters ('instances'); give the bundle's "
                             f"configs/inference.json, or tune them first with emseg tune-postprocess")
    for key in (field.name for field in dataclasses.fields(InstanceParams)):  # one option per parameter
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    return InstanceParams.from_mapping(values, str(args.params) if args.params else "instance parameters")


def run_segment(args: argparse.Namespace) -> int:
    params = instance_params(args)
    spacing = args.spacing or volume_spacing(args.probabilities) or (1.0, 1.0, 1.0)
    output, count = segment_file(args.probabilities, args.output, params, args.key, args.invert, spacing,
                                 args.overwrite)
    print(f"{output}: {count} cells ({params.mode}), pixel size (z, y, x) {list(spacing)} micrometres; "
          f"parameters {params.as_dict()}")
    return 0


def run_objects(args: argparse.Namespace) -> int:
    labels = read_volume(args.labels, args.key)
    image = read_volume(args.image, args.image_key) if args.image else None
    spacing = args.spacing
    if spacing is None:
        spacing = volume_spacing(args.labels)
        if spacing is None:
            print(f"{args.labels}: pixel size unknown (give --spacing Z Y X in micrometres): units are pixels")
            spacing = (1.0, 1.0, 1.0)
    rows = object_table(labels, image, spacing, args.per_slice)
    path = write_object_table(rows, args.output, args.overwrite)
    print(f"{path}: {len(rows)} rows ({'per object and slice' if args.per_slice or labels.ndim == 2 else 'per object'}"
          f"), pixel size (z, y, x) {list(spacing)} micrometres")
    return 0


def run_tune_postprocess(args: argparse.Namespace) -> int:
    base = InstanceParams.from_mapping(read_recipe(args.bundle).get("instances"), f"{args.bundle}/recipe.json")
    interior, truth, info = validation_probabilities(args.bundle, args.run_name, args.split, set_values(args.set))
    print(f"tuning on {len(truth)} {args.split} slices predicted with {info['checkpoint']}: {args.trials} trials")
    study = tune_instances(interior, truth, args.trials, args.score, args.seed, base)
    params, baseline = best_instance_params(study, base), challenge_baseline(interior, truth, args.score)
    run_id = log_study(study, params, info, args.score, baseline)
    print(f"best {args.score} {study.best_value:.4f} (the probability map's challenge score: {baseline:.4f}) with "
          f"{params.as_dict()}; MLflow run {run_id}")
    if args.dry_run:
        print("--dry-run: the bundle is unchanged")
    else:
        changed = save_to_bundle(args.bundle, params)
        print(f"wrote the parameters to {', '.join(str(p) for p in changed)} (key 'instances')")
    return 0


def add_parsers(commands) -> None:
    segment = commands.add_parser("segment", help=GROUPS["segment"][1])
    segment.add_argument("probabilities", help="cell-interior probabilities (float in [0, 1] or uint8): TIFF, "
                                               "folder of slices, HDF5 (--key), NIfTI or zarr")
    segment.add_argument("output", help="label stack to write: .tif, .zarr (OME-Zarr) or .nii.gz")
    segment.add_argument("--key", default=None, help="HDF5 dataset or zarr array in the input")
    segment.add_argument("--invert", action="store_true", help="the input is a membrane probability")
    segment.add_argument("--params", default=None, help="JSON file of parameters (or a bundle recipe/config with "
                                                        "an 'instances' key); the options below override it")
    segment.add_argument("--threshold", type=float, default=None, help="interior probability of a seed's mask")
    segment.add_argument("--seeds", choices=SEEDS, default=None,
                         help="components of the mask, or h-maxima of its distance transform")
    segment.add_argument("--h", type=float, default=None, help="height of the distance maxima kept as seeds")
    segment.add_argument("--sigma", type=float, default=None, help="smoothing of the membrane probability (px)")
    segment.add_argument("--min-size", dest="min_size", type=int, default=None,
                         help="segments of fewer pixels are merged into their neighbours")
    segment.add_argument("--lines", action=argparse.BooleanOptionalAction, default=None,
                         help="keep 1-pixel lines (label 0) between cells")
    segment.add_argument("--mode", choices=MODES, default=None, help="3d: link cells across slices")
    segment.add_argument("--link-iou", dest="link_iou", type=float, default=None,
                         help="least IoU of two segments in neighbouring slices to link them (3d)")
    segment.add_argument("--spacing", type=float, nargs=3, default=None, metavar=("Z", "Y", "X"),
                         help="pixel size in micrometres written with the labels (default: the probability "
                              "stack's own, from an OME-Zarr or TIFF; else 1 1 1)")
    segment.add_argument("--overwrite", action="store_true", help="replace an existing output emseg wrote")
    segment.set_defaults(func=run_segment)

    objects = commands.add_parser("objects", help=GROUPS["objects"][1])
    objects.add_argument("labels", help="label stack (one label per object, 0 = background)")
    objects.add_argument("output", help="CSV file to write")
    objects.add_argument("--key", default=None, help="HDF5 dataset or zarr array in the labels")
    objects.add_argument("--image", default=None, help="raw image stack for each object's mean intensity")
    objects.add_argument("--image-key", default=None, help="HDF5 dataset or zarr array in the image")
    objects.add_argument("--spacing", type=float, nargs=3, default=None, metavar=("Z", "Y", "X"),
                         help="pixel size in micrometres (default: the labels' own, from an OME-Zarr or TIFF; "
                              "else pixels)")
    objects.add_argument("--per-slice", action="store_true", help="one row per object and slice (area, perimeter)")
    objects.add_argument("--overwrite", action="store_true", help="replace an existing CSV file")
    objects.set_defaults(func=run_objects)

    tune = commands.add_parser("tune-postprocess", help=GROUPS["tune-postprocess"][1])
    tune.add_argument("bundle", help="bundle folder, e.g. bundles/unet")
    tune.add_argument("--run-name", default=None, help="tune for this run's best model (default: the promoted one)")
    tune.add_argument("--trials", type=int, default=60, help="trials; the first 9 are the components-and-lines "
                                                             "watershed at thresholds 0.1..0.9")
    tune.add_argument("--score", choices=SCORES, default="v_rand")
    tune.add_argument("--split", default="validation", help="the data split to tune on (never test)")
    tune.add_argument("--seed", type=int, default=0)
    tune.add_argument("--dry-run", action="store_true", help="report and log, but leave the bundle unchanged")
    tune.add_argument("--set", action="append", metavar="KEY=VALUE",
                      help="config key for the prediction, e.g. dataset_dir=/data/isbi2012 (repeatable)")
    tune.set_defaults(func=run_tune_postprocess)

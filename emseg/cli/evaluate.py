"""``emseg evaluate``: score a prediction stack against labels (dense or painted)."""

from __future__ import annotations

import argparse

import numpy as np

from emseg.cli import GROUPS
from emseg.data.datalist import binary_label
from emseg.data.isbi2012 import CLASS_NAMES, INTERIOR_CLASS
from emseg.data.painted import painted_to_classes
from emseg.evaluation import score_stack
from emseg.evaluation.scores import interior_probability, score_instances
from emseg.io import VolumeError, read_volume

LABEL_DTYPES = ("uint16", "uint32", "uint64", "int16", "int32", "int64")


def run_evaluate(args: argparse.Namespace) -> int:
    prediction = read_volume(args.prediction, args.prediction_key)
    label = read_volume(args.label, args.label_key)
    if prediction.shape != label.shape:
        raise VolumeError(f"{args.prediction}: shape {prediction.shape} differs from {args.label} {label.shape}")
    if args.painted:  # 0 = not painted (in no score), 1 = membrane, 2 = cell interior
        truth = painted_to_classes(label, len(CLASS_NAMES), args.label)
        if args.instances or prediction.dtype in LABEL_DTYPES:
            raise VolumeError(f"{args.label}: painted (sparse) labels score probabilities, not cells; V_rand of "
                              f"cells needs every pixel labelled")
    else:
        truth = binary_label(label, args.label, foreground=int(label.max()) or 1)
    if args.instances or prediction.dtype in LABEL_DTYPES:
        return report(score_instances(list(prediction), list(truth)), args,
                       f"{args.prediction}: read as a label image ({prediction.dtype}, "
                       f"{np.unique(prediction[prediction > 0]).size} labels), scored as it is")
    prediction, kind = interior_probability(prediction, args.prediction)
    if args.invert:
        prediction = 1.0 - prediction
    probabilities = [np.stack([1.0 - p, p]) for p in prediction]  # (membrane, interior) per slice
    scores = score_stack(probabilities, list(truth), CLASS_NAMES, INTERIOR_CLASS,
                         [f"slice_{i:03d}" for i in range(len(truth))])
    return report(scores, args, f"{args.prediction}: read as {kind}{' of membrane, inverted' if args.invert else ''}")


def report(scores, args: argparse.Namespace, read_as: str) -> int:
    print(read_as)
    print(scores.table())
    if args.output:
        csv_path, json_path = scores.write(args.output, args.overwrite)
        print(f"wrote {csv_path} and {json_path}")
    return 0


def add_parsers(commands) -> None:
    evaluate = commands.add_parser("evaluate", help=GROUPS["evaluate"][1])
    evaluate.add_argument("prediction", help="cell-interior probabilities: TIFF stack, folder of slices, HDF5, NIfTI")
    evaluate.add_argument("label", help="binary labels, cell interior = the non-zero value")
    evaluate.add_argument("--prediction-key", default=None, help="dataset key inside an HDF5 prediction")
    evaluate.add_argument("--label-key", default=None, help="dataset key inside an HDF5 label file")
    evaluate.add_argument("--invert", action="store_true", help="the prediction is a membrane probability")
    evaluate.add_argument("--painted", action="store_true",
                          help="the labels are painted strokes (napari, Fiji): 0 = not painted (in no score), "
                               "1 = membrane, 2 = cell interior; Dice and accuracy of the painted pixels")
    evaluate.add_argument("--output", default=None, help="folder to write metrics.csv and summary.json to")
    evaluate.add_argument("--overwrite", action="store_true", help="replace metrics.csv and summary.json there")
    evaluate.add_argument("--instances", action="store_true",
                          help="the prediction is a label image (one label per cell; uint16/uint32 ones are "
                               "recognised without it): scored as it is, no threshold sweep")
    evaluate.set_defaults(func=run_evaluate)

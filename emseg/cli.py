"""The ``emseg`` command: thin wrappers around the library.

    emseg data download isbi2012 --root DIR
    emseg data to-zarr STACK OUT.zarr [--spacing Z Y X] [--chunk 256] [--levels 3] [--overwrite]
    emseg evaluate PRED GT [--output DIR]          # probabilities (threshold sweep) or a label image (as it is)
    emseg evaluate PRED STROKES --painted          # sparse labels: 0 = not painted, 1 = membrane, 2 = interior
    emseg segment PROBS OUT.tif [--threshold 0.5 --seeds distance --h 2 --min-size 50 --mode 3d]
    emseg objects LABELS OUT.csv [--image RAW] [--spacing Z Y X] [--per-slice]
    emseg tune-postprocess bundles/unet [--trials 60] [--run_name NAME]
    emseg augment preview --bundle bundles/unet --n 8 --out aug.png [--save DIR --count 1000]
    emseg bundle render [bundles/unet ...] [--check]
    emseg bundle promote bundles/unet --run_name unet-20261122-101500-0a1b2c3d
    emseg bundle pack bundles/unet [--run_name NAME] [--output DIR]
    emseg bundle verify unet_v0.2.0.zip
    emseg bundle export-bioimageio bundles/unet unet.bioimageio.zip [--image STACK] [--test]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

DATASETS = ("isbi2012",)
LABEL_DTYPES = ("uint16", "uint32", "uint64", "int16", "int32", "int64")


def _download(args: argparse.Namespace) -> int:
    from emseg.data.isbi2012 import ISBI2012_URL, download_isbi2012

    sha256 = None if args.sha256.lower() == "none" else args.sha256
    image, label = download_isbi2012(args.root, url=args.url or ISBI2012_URL, sha256=sha256 or None,
                                     keep_hdf5=args.keep_hdf5)
    print(f"ISBI 2012 training stack ready: {image} {label}")
    return 0


def _to_zarr(args: argparse.Namespace) -> int:
    from emseg.io import open_slices, write_ome_zarr

    with open_slices(args.stack, args.key) as source:
        out = write_ome_zarr(source, args.output, args.spacing, args.chunk, args.levels, args.overwrite)
        print(f"{out}: OME-Zarr image of {len(source)} slices of {source.shape[0]}x{source.shape[1]} "
              f"({source.dtype}), pixel size (z, y, x) {args.spacing} micrometres, {args.levels} resolutions")
    return 0


def interior_probability(prediction, path) -> tuple:
    """A prediction as float probabilities in [0, 1], and what it was read as: a mask (two values, 0/1 or 0/255:
    the non-zero value is 1), a probability map (floats in [0, 1]) or an 8-bit probability map (uint8 with more
    than two values, divided by 255)."""
    import numpy as np

    from emseg.io import VolumeError

    values = np.unique(prediction)
    if values.size <= 2 and values.min() >= 0:
        return (prediction > 0).astype(np.float32), f"a mask (values {values.tolist()}: 0 and 1 after reading)"
    if prediction.dtype.kind == "f" and values.min() >= 0 and values.max() <= 1:
        return prediction.astype(np.float32), "a probability map (floats in [0, 1])"
    if prediction.dtype == np.uint8:
        return prediction / np.float32(255), "an 8-bit probability map (uint8 / 255)"
    raise VolumeError(f"{path}: neither a mask (two values), probabilities in [0, 1] nor an 8-bit probability map: "
                      f"{prediction.dtype} values {values.min()}..{values.max()}")


def _evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from emseg.data.datalist import binary_label
    from emseg.data.isbi2012 import CLASS_NAMES, INTERIOR_CLASS
    from emseg.data.painted import painted_to_classes
    from emseg.evaluation import score_stack
    from emseg.evaluation.scores import score_instances
    from emseg.io import VolumeError, read_volume

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
        return _report(score_instances(list(prediction), list(truth)), args,
                       f"{args.prediction}: read as a label image ({prediction.dtype}, "
                       f"{np.unique(prediction[prediction > 0]).size} labels), scored as it is")
    prediction, kind = interior_probability(prediction, args.prediction)
    if args.invert:
        prediction = 1.0 - prediction
    probabilities = [np.stack([1.0 - p, p]) for p in prediction]  # (membrane, interior) per slice
    scores = score_stack(probabilities, list(truth), CLASS_NAMES, INTERIOR_CLASS,
                         [f"slice_{i:03d}" for i in range(len(truth))])
    return _report(scores, args, f"{args.prediction}: read as {kind}{' of membrane, inverted' if args.invert else ''}")


def _report(scores, args: argparse.Namespace, read_as: str) -> int:
    print(read_as)
    print(scores.table())
    if args.output:
        csv_path, json_path = scores.write(args.output, args.overwrite)
        print(f"wrote {csv_path} and {json_path}")
    return 0


def _instance_params(args: argparse.Namespace):
    import dataclasses
    import json

    from emseg.segmentation import InstanceParams

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


def _segment(args: argparse.Namespace) -> int:
    from emseg.io import volume_spacing
    from emseg.segmentation.instances import segment_file

    params = _instance_params(args)
    spacing = args.spacing or volume_spacing(args.probabilities) or (1.0, 1.0, 1.0)
    output, count = segment_file(args.probabilities, args.output, params, args.key, args.invert, spacing,
                                 args.overwrite)
    print(f"{output}: {count} cells ({params.mode}), pixel size (z, y, x) {list(spacing)} micrometres; parameters {params.as_dict()}")
    return 0


def _objects(args: argparse.Namespace) -> int:
    from emseg.io import read_volume, volume_spacing
    from emseg.segmentation import object_table, write_object_table

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


def _tune_postprocess(args: argparse.Namespace) -> int:
    from emseg.bundle.render import read_recipe
    from emseg.segmentation import InstanceParams
    from emseg.segmentation.tuning import (
        best_instance_params,
        challenge_baseline,
        log_study,
        save_to_bundle,
        tune_instances,
        validation_probabilities,
    )

    base = InstanceParams.from_mapping(read_recipe(args.bundle).get("instances"), f"{args.bundle}/recipe.json")
    interior, truth, info = validation_probabilities(args.bundle, args.run_name, args.split, _set_values(args.set))
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


def _set_values(items: Sequence[str] | None) -> dict:
    """``--set KEY=VALUE`` options as config overrides (a value is read as JSON where it is JSON)."""
    import json

    overrides = {}
    for item in items or []:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def _bundle_pack(args: argparse.Namespace) -> int:
    from emseg.bundle.pack import pack_bundle

    path = pack_bundle(args.bundle, args.output, run_name=args.run_name, weights=args.weights,
                       overrides=_set_values(args.set))
    print(f"packed {args.bundle} into {path}")
    return 0


def _bundle_export_bioimageio(args: argparse.Namespace) -> int:
    from emseg.bundle.bioimageio import (
        export_bioimageio,
        run_model_test,
        validate_package,
    )

    path = export_bioimageio(args.bundle, args.output, args.image, args.dataset_dir, args.overwrite)
    print(f"{path}: bioimage.io model package, {validate_package(path)} by bioimageio.spec")
    if args.test:
        print(f"{path}: {run_model_test(path)} bioimageio.core's model test")
    return 0


def _bundle_promote(args: argparse.Namespace) -> int:
    from emseg.engine.runs import promote

    bundle = Path(args.bundle)
    target = promote(bundle / "runs" / args.run_name, bundle / "models")
    print(f"{target}: now the best model of run {args.run_name} (sidecar {target.with_name('model.json')})")
    return 0


def _bundle_verify(args: argparse.Namespace) -> int:
    from emseg.bundle.pack import verify_bundle

    result = verify_bundle(args.zip, args.sha256, args.allow_code)
    meta = result["metadata"]
    for item in result["unlisted_code"]:
        print(f"code off the allow list (accepted with --allow-code): {item}")
    print(f"{args.zip}: verified {meta['name']} {meta['version']}: schema, model checksums, model.pt = model.ts, "
          f"network input/output, configs' code; origin: {result['origin']}")
    return 0


def _bundle_render(args: argparse.Namespace) -> int:
    from emseg.bundle.render import find_bundles, render_bundle, stale_files

    bundles = [Path(b) for b in args.bundles] or find_bundles()
    if not bundles:
        raise ValueError("no bundle folder with a recipe.json under ./bundles; name the bundle folders to render")
    if args.check:
        stale = [path for bundle in bundles for path in stale_files(bundle)]
        for path in stale:
            print(f"{path}: differs from what 'emseg bundle render' writes")
        if stale:
            print(f"{len(stale)} config files are stale: run 'emseg bundle render' and commit them", file=sys.stderr)
            return 1
        print(f"{len(bundles)} bundles: configs match their recipe and the template")
        return 0
    for bundle in bundles:
        changed = render_bundle(bundle)
        print(f"{bundle}: {', '.join(p.name for p in changed) + ' rewritten' if changed else 'up to date'}")
    return 0


def _augment_preview(args: argparse.Namespace) -> int:
    from PIL import Image

    from emseg.bundle.preview import augmented_pairs, preview_grid, save_pairs
    from emseg.io.files import replace_atomically
    from emseg.io.safety import check_new_files

    if not args.out and not args.save:
        raise ValueError("give --out PNG for a preview grid and/or --save DIR to write augmented pairs")
    overrides = {"download": False}
    if args.dataset_dir:
        overrides["dataset_dir"] = str(Path(args.dataset_dir).resolve())
    if args.augmentation:
        overrides["augmentation"] = args.augmentation
    if args.out:
        check_new_files([args.out], args.overwrite)
        grid = preview_grid(list(augmented_pairs(args.bundle, args.n, args.seed, **overrides)), args.columns)
        replace_atomically(args.out, lambda tmp: Image.fromarray(grid).save(tmp, format="PNG"))
        print(f"wrote {args.out}: {args.n} augmented pairs, {grid.shape[1]}x{grid.shape[0]} pixels")
    if args.save:
        count = save_pairs(augmented_pairs(args.bundle, args.count, args.seed, **overrides), args.save, args.overwrite)
        print(f"wrote {count} augmented pairs to {args.save}/images and {args.save}/labels")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of the ``emseg`` command."""
    from emseg import __version__
    from emseg.data.isbi2012 import ISBI2012_SHA256
    from emseg.segmentation.instances import MODES, SEEDS
    from emseg.segmentation.tuning import SCORES

    parser = argparse.ArgumentParser(prog="emseg", description="EM segmentation with MONAI bundles")
    parser.add_argument("--version", action="version", version=f"emseg {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="data sets").add_subparsers(dest="data_command", required=True)
    download = data.add_parser("download", help="download a public data set and convert it to TIFF stacks")
    download.add_argument("dataset", choices=DATASETS)
    download.add_argument("--root", required=True, help="folder to write train-volume.tif and train-labels.tif to")
    download.add_argument("--url", default=None, help="mirror URL of the HDF5 file (default: the public one)")
    download.add_argument("--sha256", default=ISBI2012_SHA256,
                          help="expected sha256 of the downloaded file ('none' skips the check)")
    download.add_argument("--keep-hdf5", action="store_true", help="keep the downloaded HDF5 file")
    download.set_defaults(func=_download)

    to_zarr = data.add_parser("to-zarr", help="convert any volume emseg reads to an OME-Zarr image (napari, Fiji)")
    to_zarr.add_argument("stack", help="TIFF stack, folder of slices, HDF5 (--key), NIfTI or zarr")
    to_zarr.add_argument("output", help="the OME-Zarr image to write, a folder named *.zarr")
    to_zarr.add_argument("--key", default=None, help="HDF5 dataset or zarr array in the input")
    to_zarr.add_argument("--spacing", type=float, nargs=3, default=[1.0, 1.0, 1.0], metavar=("Z", "Y", "X"),
                         help="pixel size in micrometres (default 1 1 1: unknown; ISBI 2012 is 0.05 0.004 0.004)")
    to_zarr.add_argument("--chunk", type=int, default=256, help="chunk width and height in pixels (one slice deep)")
    to_zarr.add_argument("--levels", type=int, default=3, help="resolutions, each halving y and x")
    to_zarr.add_argument("--overwrite", action="store_true", help="replace an existing zarr store at OUTPUT")
    to_zarr.set_defaults(func=_to_zarr)

    evaluate = commands.add_parser("evaluate", help="score a probability stack against a label stack (ISBI scores)")
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
    evaluate.set_defaults(func=_evaluate)

    segment = commands.add_parser("segment", help="cells (uint32 labels) from cell-interior probabilities")
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
    segment.set_defaults(func=_segment)

    objects = commands.add_parser("objects", help="a CSV table of the objects of a label stack (regionprops)")
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
    objects.set_defaults(func=_objects)

    tune = commands.add_parser("tune-postprocess", help="tune the instance parameters on the validation split "
                                                        "(Optuna), write them to the bundle, log to MLflow")
    tune.add_argument("bundle", help="bundle folder, e.g. bundles/unet")
    tune.add_argument("--run_name", default=None, help="tune for this run's best model (default: the promoted one)")
    tune.add_argument("--trials", type=int, default=60, help="trials; the first 9 are the components-and-lines "
                                                             "watershed at thresholds 0.1..0.9")
    tune.add_argument("--score", choices=SCORES, default="v_rand")
    tune.add_argument("--split", default="validation", help="the data split to tune on (never test)")
    tune.add_argument("--seed", type=int, default=0)
    tune.add_argument("--dry-run", action="store_true", help="report and log, but leave the bundle unchanged")
    tune.add_argument("--set", action="append", metavar="KEY=VALUE",
                      help="config key for the prediction, e.g. dataset_dir=/data/isbi2012 (repeatable)")
    tune.set_defaults(func=_tune_postprocess)

    augment = commands.add_parser("augment", help="augmented training data").add_subparsers(dest="augment_command",
                                                                                        required=True)
    preview = augment.add_parser("preview", help="grid of augmented image/label pairs, or many pairs as PNG")
    preview.add_argument("--bundle", default="bundles/unet", help="bundle folder whose train.json to use")
    preview.add_argument("--n", type=int, default=8, help="pairs in the grid")
    preview.add_argument("--columns", type=int, default=4)
    preview.add_argument("--out", default=None, help="PNG file for the grid")
    preview.add_argument("--save", default=None, help="folder to write augmented pairs to (images/, labels/)")
    preview.add_argument("--count", type=int, default=1000, help="pairs to write with --save")
    preview.add_argument("--augmentation", default=None, help="preset name instead of the bundle's")
    preview.add_argument("--dataset-dir", default=None, help="data folder instead of the bundle's dataset_dir")
    preview.add_argument("--seed", type=int, default=0)
    preview.add_argument("--overwrite", action="store_true", help="replace an existing --out file or saved pairs")
    preview.set_defaults(func=_augment_preview)

    bundle = commands.add_parser("bundle", help="render, pack and verify bundles").add_subparsers(
        dest="bundle_command", required=True)
    render = bundle.add_parser("render", help="write bundles' configs from the shared template and their recipe.json")
    render.add_argument("bundles", nargs="*", help="bundle folders (default: every bundles/*/recipe.json)")
    render.add_argument("--check", action="store_true", help="write nothing; exit 1 if a config is stale")
    render.set_defaults(func=_bundle_render)
    pack = bundle.add_parser("pack", help="zip a trained bundle (TorchScript, checksums, MONAI-only inference)")
    pack.add_argument("bundle", help="bundle folder, e.g. bundles/unet")
    pack.add_argument("--output", default=None, help="folder for NAME_vVERSION.zip (default: the project root)")
    pack.add_argument("--run_name", default=None, help="pack this run's best model (default: the promoted model)")
    pack.add_argument("--weights", default=None, help="a weights file from elsewhere (with --set network_from=config "
                                                      "and the network's keys)")
    pack.add_argument("--set", action="append", metavar="KEY=VALUE",
                      help="config key to set in the packed configs, e.g. features=[8,8,16,32,64,8] (repeatable)")
    pack.set_defaults(func=_bundle_pack)
    export = bundle.add_parser("export-bioimageio", help="a bioimage.io model package of the promoted model "
                                                         "(ilastik, deepImageJ in Fiji, napari, QuPath)")
    export.add_argument("bundle", help="bundle folder, e.g. bundles/unet")
    export.add_argument("output", help="the package to write, NAME.zip")
    export.add_argument("--image", default=None, help="a stack whose first slice makes the test tensors and cover "
                                                      "(default: the data set's test images)")
    export.add_argument("--dataset_dir", default=None, help="where the data set is (default: the project's data/)")
    export.add_argument("--overwrite", action="store_true", help="replace an existing package file")
    export.add_argument("--test", action="store_true", help="also run bioimageio.core's model test on the package")
    export.set_defaults(func=_bundle_export_bioimageio)
    promote = bundle.add_parser("promote", help="make a finished run's best model the bundle's models/model.pt")
    promote.add_argument("bundle", help="bundle folder, e.g. bundles/unet")
    promote.add_argument("--run_name", required=True, help="the run (a folder under the bundle's runs/)")
    promote.set_defaults(func=_bundle_promote)
    verify = bundle.add_parser("verify", help="check a packed bundle: schema, checksums, network input/output")
    verify.add_argument("zip", help="NAME_vVERSION.zip")
    verify.add_argument("--sha256", default=None, help="the zip's sha256 as published by the sender (64 hex digits "
                                                       "or a sha256sum file); without it only integrity is checked")
    verify.add_argument("--allow-code", action="store_true", help="accept configs that run code off the allow list "
                                                                  "(listed in the output)")
    verify.set_defaults(func=_bundle_verify)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``emseg`` console command."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from emseg.errors import report

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Exception as err:  # one clear line for the user, the traceback in a file (or EMSEG_TRACEBACK=1)
        report(type(err), err, err.__traceback__)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""``emseg bundle``: render a bundle's configs, promote a run, pack and verify a bundle, export to bioimage.io."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from emseg.bundle.bioimageio import export_bioimageio, run_model_test, validate_package
from emseg.bundle.pack import pack_bundle, verify_bundle
from emseg.bundle.render import find_bundles, render_bundle, stale_files
from emseg.cli import GROUPS
from emseg.cli.options import set_values
from emseg.engine.runs import promote


def run_bundle_pack(args: argparse.Namespace) -> int:
    path = pack_bundle(args.bundle, args.output, run_name=args.run_name, weights=args.weights,
                       overrides=set_values(args.set))
    print(f"packed {args.bundle} into {path}")
    return 0


def run_bundle_export_bioimageio(args: argparse.Namespace) -> int:
    path = export_bioimageio(args.bundle, args.output, args.image, args.dataset_dir, args.overwrite)
    print(f"{path}: bioimage.io model package, {validate_package(path)} by bioimageio.spec")
    if args.test:
        print(f"{path}: {run_model_test(path)} bioimageio.core's model test")
    return 0


def run_bundle_promote(args: argparse.Namespace) -> int:
    bundle = Path(args.bundle)
    target = promote(bundle / "runs" / args.run_name, bundle / "models")
    print(f"{target}: now the best model of run {args.run_name} (sidecar {target.with_name('model.json')})")
    return 0


def run_bundle_verify(args: argparse.Namespace) -> int:
    result = verify_bundle(args.zip, args.sha256, args.allow_code)
    meta = result["metadata"]
    for item in result["unlisted_code"]:
        print(f"code off the allow list (accepted with --allow-code): {item}")
    print(f"{args.zip}: verified {meta['name']} {meta['version']}: schema, model checksums, model.pt = model.ts, "
          f"network input/output, configs' code; origin: {result['origin']}")
    return 0


def run_bundle_render(args: argparse.Namespace) -> int:
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


def add_parsers(commands) -> None:
    bundle = commands.add_parser("bundle", help=GROUPS["bundle"][1]).add_subparsers(
        dest="bundle_command", required=True)
    render = bundle.add_parser("render", help="write bundles' configs from the shared template and their recipe.json")
    render.add_argument("bundles", nargs="*", help="bundle folders (default: every bundles/*/recipe.json)")
    render.add_argument("--check", action="store_true", help="write nothing; exit 1 if a config is stale")
    render.set_defaults(func=run_bundle_render)
    pack = bundle.add_parser("pack", help="zip a trained bundle (TorchScript, checksums, MONAI-only inference)")
    pack.add_argument("bundle", help="bundle folder, e.g. bundles/unet")
    pack.add_argument("--output", default=None, help="folder for NAME_vVERSION.zip (default: the project root)")
    pack.add_argument("--run-name", default=None, help="pack this run's best model (default: the promoted model)")
    pack.add_argument("--weights", default=None, help="a weights file from elsewhere (with --set network_from=config "
                                                      "and the network's keys)")
    pack.add_argument("--set", action="append", metavar="KEY=VALUE",
                      help="config key to set in the packed configs, e.g. features=[8,8,16,32,64,8] (repeatable)")
    pack.set_defaults(func=run_bundle_pack)
    export = bundle.add_parser("export-bioimageio", help="a bioimage.io model package of the promoted model "
                                                         "(ilastik, deepImageJ in Fiji, napari, QuPath)")
    export.add_argument("bundle", help="bundle folder, e.g. bundles/unet")
    export.add_argument("output", help="the package to write, NAME.zip")
    export.add_argument("--image", default=None, help="a stack whose first slice makes the test tensors and cover "
                                                      "(default: the data set's test images)")
    export.add_argument("--dataset-dir", default=None, help="where the data set is (default: the project's data/)")
    export.add_argument("--overwrite", action="store_true", help="replace an existing package file")
    export.add_argument("--test", action="store_true", help="also run bioimageio.core's model test on the package")
    export.set_defaults(func=run_bundle_export_bioimageio)
    promote = bundle.add_parser("promote", help="make a finished run's best model the bundle's models/model.pt")
    promote.add_argument("bundle", help="bundle folder, e.g. bundles/unet")
    promote.add_argument("--run-name", required=True, help="the run (a folder under the bundle's runs/)")
    promote.set_defaults(func=run_bundle_promote)
    verify = bundle.add_parser("verify", help="check a packed bundle: schema, checksums, network input/output")
    verify.add_argument("zip", help="NAME_vVERSION.zip")
    verify.add_argument("--sha256", default=None, help="the zip's sha256 as published by the sender (64 hex digits "
                                                       "or a sha256sum file); without it only integrity is checked")
    verify.add_argument("--allow-code", action="store_true", help="accept configs that run code off the allow list "
                                                                  "(listed in the output)")
    verify.set_defaults(func=run_bundle_verify)

"""The ``emseg`` command: thin wrappers around the library.

    emseg data download isbi2012 --root DIR
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

DATASETS = ("isbi2012",)


def _download(args: argparse.Namespace) -> int:
    from emseg.data.download import ISBI2012_URL, download_isbi2012

    sha256 = None if args.sha256.lower() == "none" else args.sha256
    image, label = download_isbi2012(args.root, url=args.url or ISBI2012_URL, sha256=sha256 or None,
                                     keep_hdf5=args.keep_hdf5)
    print(f"ISBI 2012 training stack ready: {image} {label}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of the ``emseg`` command."""
    from emseg import __version__
    from emseg.data.download import ISBI2012_SHA256

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``emseg`` console command."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Exception as err:  # one clear line for the user, not a traceback
        print(f"emseg: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

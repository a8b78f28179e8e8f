"""``emseg data``: download a public data set, convert a volume to OME-Zarr."""

from __future__ import annotations

import argparse

from emseg.cli import GROUPS
from emseg.data import DATASETS
from emseg.io import open_slices, write_ome_zarr

PUBLIC = [name for name, spec in DATASETS.items() if spec.download]  # the data sets a lab can download


def run_download(args: argparse.Namespace) -> int:
    spec = DATASETS[args.dataset]
    sha256 = None if (args.sha256 or "").lower() == "none" else args.sha256 or spec.sha256
    files = spec.download(args.root, args.url, sha256, args.keep_hdf5)
    print(f"{spec.title} ready: {' '.join(str(f) for f in files)}")
    return 0


def run_to_zarr(args: argparse.Namespace) -> int:
    with open_slices(args.stack, args.key) as source:
        out = write_ome_zarr(source, args.output, args.spacing, args.chunk, args.levels, args.overwrite)
        print(f"{out}: OME-Zarr image of {len(source)} slices of {source.shape[0]}x{source.shape[1]} "
              f"({source.dtype}), pixel size (z, y, x) {args.spacing} micrometres, {args.levels} resolutions")
    return 0


def add_parsers(commands) -> None:
    data = commands.add_parser("data", help=GROUPS["data"][1]).add_subparsers(dest="data_command", required=True)
    download = data.add_parser("download", help="download a public data set and convert it to TIFF stacks")
    download.add_argument("dataset", choices=PUBLIC)
    download.add_argument("--root", required=True, help="folder to write train-volume.tif and train-labels.tif to")
    download.add_argument("--url", default=None, help="mirror URL of the HDF5 file (default: the public one)")
    download.add_argument("--sha256", default=None, help="expected sha256 of the downloaded file (default: the "
                                                         "published one; 'none' skips the check)")
    download.add_argument("--keep-hdf5", action="store_true", help="keep the downloaded HDF5 file")
    download.set_defaults(func=run_download)

    to_zarr = data.add_parser("to-zarr", help="convert any volume emseg reads to an OME-Zarr image (napari, Fiji)")
    to_zarr.add_argument("stack", help="TIFF stack, folder of slices, HDF5 (--key), NIfTI or zarr")
    to_zarr.add_argument("output", help="the OME-Zarr image to write, a folder named *.zarr")
    to_zarr.add_argument("--key", default=None, help="HDF5 dataset or zarr array in the input")
    to_zarr.add_argument("--spacing", type=float, nargs=3, default=[1.0, 1.0, 1.0], metavar=("Z", "Y", "X"),
                         help="pixel size in micrometres (default 1 1 1: unknown; ISBI 2012 is 0.05 0.004 0.004)")
    to_zarr.add_argument("--chunk", type=int, default=256, help="chunk width and height in pixels (one slice deep)")
    to_zarr.add_argument("--levels", type=int, default=3, help="resolutions, each halving y and x")
    to_zarr.add_argument("--overwrite", action="store_true", help="replace an existing zarr store at OUTPUT")
    to_zarr.set_defaults(func=run_to_zarr)

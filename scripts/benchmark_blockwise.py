"""Throughput and memory of block-wise inference on Dask against plain slice-by-slice inference, on one zarr volume.

    python scripts/benchmark_blockwise.py                 # 256 slices of 2048x2048 (1.07 GB), blocks of 1024x1024
    python scripts/benchmark_blockwise.py --quick         # 4 slices of 1024x1024: every figure, not a measurement

The volume is built by tiling ISBI test slices (uint8, chunks of one block) into a zarr array. The precision and layout (bfloat16,
channels-last) are measured once by the bundle's own measurement on one block's window and used by every run. On the
volume, each in a fresh process and one after another:
  (a) slice by slice: ``emseg.inference.segment_stack`` with the bundle's inference.json (one window per slice up to
      ``whole_slice_pixels``), an OME-Zarr output;
  (b) block-wise (``emseg.blockwise.segment_blockwise``, the inference_blockwise.json overlay's function) on a
      LocalCluster of 1 worker with all CPUs' torch threads, then of 2 workers sharing them;
and for each: megapixels per second (time of the segmentation itself, network set-up excluded), peak resident memory
of the process and, block-wise, of every worker. A block computes (block + 2 halo)^2 pixels for block^2 of output:
the figures give that share apart from Dask's own overhead. The last line is all figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EMSEG_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def build_volume(path: Path, slices: int, size: int, chunk: int) -> int:
    """A (slices, size, size) uint8 zarr array tiled from ISBI test slices, written slice by slice; its bytes."""
    import zarr

    source = tifffile.imread(SHARED / "isbi2012" / "test-volume.tif")
    tile = source.shape[1]
    per_side = -(-size // tile)
    array = zarr.create_array(str(path), shape=(slices, size, size), chunks=(1, chunk, chunk), dtype="uint8")
    for z in range(slices):
        tiles = [source[(z * per_side ** 2 + k) % len(source)] for k in range(per_side ** 2)]
        rows = [np.concatenate(tiles[r * per_side:(r + 1) * per_side], axis=1) for r in range(per_side)]
        array[z] = np.concatenate(rows, axis=0)[:size, :size]
    return slices * size * size


def _bundle(bundle: str, overrides: dict):
    import torch

    from emseg.engine.paths import load_config

    parser = load_config(REPO_ROOT / "bundles" / bundle / "configs" / "inference.json",
                         {"device": "$torch.device('cpu')", **overrides})
    network = parser.get_parsed_content("network").eval()  # speed and memory do not depend on the weights
    return parser, network, torch.device("cpu")


def child(mode: str, bundle: str, volume: str, output: str, block: int, halo: int, workers: int,
          settings: dict) -> None:
    """Child process: one segmentation of the volume with the given precision and layout, figures as a JSON line."""
    from emseg.engine.allocator import keep_freed_memory

    keep_freed_memory()  # as every bundle config's first initialize step
    parser, network, device = _bundle(bundle, settings)
    inferer, postprocessing = parser.get_parsed_content("inferer"), parser.get_parsed_content("postprocessing")
    figures = {}
    start = time.perf_counter()
    if mode == "slices":
        from emseg.inference import segment_stack

        segment_stack(network, inferer, volume, output, output_format="zarr", transform=parser.get_parsed_content(
            "preprocessing"), postprocessing=postprocessing, device=device)
    else:
        from emseg.blockwise import segment_blockwise

        summary = segment_blockwise(network, inferer, volume, output, block=(block, block), halo=halo,
                                    postprocessing=postprocessing, device=device, workers=workers)
        figures = {"blocks": summary["blocks"], "block_seconds": summary["seconds"],
                   "worker_peak_mib": summary["worker_peak_mib"]}
    figures["seconds"] = time.perf_counter() - start
    figures["process_peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(figures))


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--bundle", default="unet")
    args.add_argument("--slices", type=int, default=256)
    args.add_argument("--size", type=int, default=2048, help="rows and columns of a slice")
    args.add_argument("--block", type=int, default=1024)
    args.add_argument("--halo", type=int, default=96)
    args.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args.add_argument("--quick", action="store_true")
    args.add_argument("--json", type=Path, help="also write the figures to this file")
    args.add_argument("--child", nargs=5, metavar=("MODE", "VOLUME", "OUTPUT", "WORKERS", "SETTINGS"),
                      help=argparse.SUPPRESS)
    opts = args.parse_args()
    if opts.quick:
        opts.slices, opts.size, opts.block = 4, 1024, 512
    if opts.child:
        mode, volume, output, workers, settings = opts.child
        child(mode, opts.bundle, volume, output, opts.block, opts.halo, int(workers), json.loads(settings))
        return
    # the precision and layout measured once, here, for every run: each run measuring its own could choose
    # differently under timing noise and make the runs incomparable
    parser, network, _ = _bundle(opts.bundle, {"patch_size": [opts.block + 2 * opts.halo] * 2})
    chosen = parser.get_parsed_content("settings")
    settings = {"amp": chosen.amp, "channels_last": chosen.channels_last}
    del parser, network
    results = {"bundle": opts.bundle, "cpus": os.cpu_count(), "slices": opts.slices, "size": opts.size,
               "block": opts.block, "halo": opts.halo, "settings": settings,
               "halo_pixel_factor": round(((opts.block + 2 * opts.halo) / opts.block) ** 2, 3)}
    with tempfile.TemporaryDirectory() as tmp:
        volume = Path(tmp) / "volume.zarr"
        start = time.perf_counter()
        results["volume_gb"] = round(build_volume(volume, opts.slices, opts.size, opts.block) / 1e9, 3)
        print(f"built {volume.name}: {opts.slices} x {opts.size} x {opts.size} uint8 ({results['volume_gb']} GB) "
              f"in {time.perf_counter() - start:.0f} s; {os.cpu_count()} CPUs; precision and layout for every run "
              f"(measured once on a {opts.block + 2 * opts.halo}-pixel window): {settings}", flush=True)
        megapixels = opts.slices * opts.size ** 2 / 1e6
        runs = [("slices", 1)] + [("blocks", workers) for workers in opts.workers]
        for mode, workers in runs:
            name = "slice_by_slice" if mode == "slices" else f"blockwise_{workers}_workers"
            command = [sys.executable, __file__, "--bundle", opts.bundle, "--block", str(opts.block), "--halo",
                       str(opts.halo), "--child", mode, str(volume), str(Path(tmp) / f"{name}.zarr"), str(workers),
                       json.dumps(settings)]
            if opts.quick:
                command.append("--quick")
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            figures["megapixels_per_second"] = round(megapixels / figures["seconds"], 2)
            figures = {key: round(value, 2) if isinstance(value, float) else value for key, value in figures.items()}
            results[name] = figures
            print(name, json.dumps(figures), flush=True)
    base = results["slice_by_slice"]["seconds"]
    for workers in opts.workers:
        ratio = results[f"blockwise_{workers}_workers"]["seconds"] / base
        results[f"blockwise_{workers}_workers"]["time_vs_slice_by_slice"] = round(ratio, 3)
        print(f"block-wise, {workers} worker(s): {ratio:.2f}x the slice-by-slice time; of it {results['halo_pixel_factor']:.2f}x "
              f"is the halo's extra pixels, {ratio / results['halo_pixel_factor']:.2f}x the rest (Dask, reads, writes)")
    if opts.json:
        opts.json.write_text(json.dumps(results, indent=1))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
